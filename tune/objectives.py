"""A trial's objective, computed from its finished run dir; none of them reads the test set.

- `silver_loss` (default, minimised): stage 3's best validation loss on the held-out
  pseudo-labelled documents; reported at every stage-3 epoch, so ASHA can compare trials;
- `silver_f1` (maximised): the Example-F1 of the pipeline's own decoder (the final model,
  `evaluation.decoding`) against the pseudo-labels of those same held-out documents; it
  scores what a prediction is scored on (a decoded label set), but only at the end;
- `--dev FILE` (maximised): the Example-F1 on a labelled dev split of corpus documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taxoclass.config import Config
from taxoclass.errors import ConfigError

OBJECTIVES = {"silver_loss": "min", "silver_f1": "max"}
SILVER_F1 = "silver/example_f1"


def decoded_example_f1(cfg: Config, run_dir: Path, texts: list[str], golds: list[list[int]]) -> float:
    """Example-F1 of the run's final model, decoded as the pipeline decodes, on these documents."""
    import torch

    from taxoclass.decoding import decode
    from taxoclass.metrics import evaluate_rankings
    from taxoclass.stages.model import predict_probs
    from taxoclass.stages.model_io import load_checkpoint

    device = torch.device("cpu")  # a trial's own process holds no GPU; these are a few hundred documents
    bundle, tax = load_checkpoint(run_dir / "model.pt", device)
    probs = predict_probs(bundle.model, bundle.docs(texts), device, cfg.evaluation.batch_size)
    ranked, _ = decode(probs, tax, cfg.evaluation.decoding, cfg.evaluation.save_top_k)
    return evaluate_rankings(ranked.tolist(), golds, tax.levels)["example_f1"]


def silver_example_f1(cfg: Config, run_dir: Path) -> float:
    """The decoder's Example-F1 against the pseudo-labels (positive targets) of stage 3's held-out documents."""
    from taxoclass.pipeline import Run

    run = Run(cfg, command="silver objective")  # the finished run again: its stages 1-2 come from the cache
    try:
        silver = run.silver_validation()
        texts = [run.inputs.corpus.texts[i] for i in silver.rows]
    finally:
        run.close()
    if not texts:
        return float("nan")  # too few pseudo-labelled documents to hold any out
    golds = [np.flatnonzero((t > 0.5) & (m > 0)).tolist() for t, m in zip(silver.targets, silver.mask)]
    return decoded_example_f1(cfg, run_dir, texts, golds)


def dev_example_f1(cfg: Config, run_dir: Path, dev: str) -> float:
    """Example-F1 on the labelled dev documents (doc_id<TAB>id,id; taken from the corpus)."""
    from taxoclass.data.readers import read_doc2labels
    from taxoclass.pipeline import prepare_inputs

    inputs = prepare_inputs(cfg)
    gold = read_doc2labels(Path(dev), inputs.taxonomy)
    texts = dict(zip(inputs.corpus.ids, inputs.corpus.texts))
    ids = [d for d in gold if d in texts]
    if not ids:
        raise ConfigError("--dev", f"none of the documents of {dev} is in the corpus")
    return decoded_example_f1(cfg, run_dir, [texts[d] for d in ids], [gold[d] for d in ids])
