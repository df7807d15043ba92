"""Stage 3 or stage 4 as one plain job, and the one function that runs it wherever it runs.

Features:
- `TrainingJob`: everything a training stage needs, as data: the config (its model sections build
  the model, `classifier` / `self_training` train it, `seed`), the taxonomy and keywords, the
  documents (texts, or with a frozen encoder their vectors), the initial weights (the head alone
  with a frozen encoder), stage 3's targets and mask, stage 4's silver set, and the name its
  checkpoints go under (`fresh`: restore none);
- `run_training(job, device, log, env)`: builds the model from the job, seeds the stage, trains it with
  `train_classifier` or `self_train` and returns (stats, final weights on the CPU). The local
  runtime calls it in this process, Ray Train's worker loop on each rank (`env`: DDP, checkpoints);
  the pipeline builds the job (`pipeline/build_jobs.py`) and loads the returned weights: no runtime sees the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taxoclass.config import Config
from taxoclass.data.taxonomy import Taxonomy
from taxoclass.training.doc_batches import DocBatches
from taxoclass.training.silver import SilverValidation


@dataclass
class TrainingJob:
    stage: int  # 3: train the classifier on pseudo-labels; 4: self-train it on the whole corpus
    cfg: Config
    taxonomy: Taxonomy
    keywords: dict[int, list[str]] | None
    documents: list[str] | np.ndarray  # texts, or with a frozen encoder their vectors (rows as `targets`)
    init_state: dict[str, torch.Tensor]  # the starting weights, on the CPU
    targets: np.ndarray | None = None  # stage 3
    mask: np.ndarray | None = None  # stage 3 with the bce loss
    silver: SilverValidation | None = None  # stage 4's guard
    name: str = ""  # the stage's cache entry: its checkpoints are kept under it
    fresh: bool = False  # a forced stage: no checkpoint of an earlier attempt is restored
    run_dir: Path | None = None  # a runtime's default place for its checkpoints
    device: object = "cpu"  # where a job trains in the pipeline's process (a Ray worker uses its own)


def run_training(job: TrainingJob, device, log: Callable, env=None, watch: Callable | None = None) -> tuple[dict, dict]:
    """Train the job's model; (stats, final weights on the CPU: the head alone with a frozen encoder).
    `watch(model)` sees the model before it trains (gradient logging)."""
    from taxoclass.seeding import seed_stage
    from taxoclass.stages.classifier import train_classifier
    from taxoclass.stages.model_io import build_model, stored_class_features
    from taxoclass.stages.self_training import self_train

    cfg = job.cfg
    bundle = build_model(cfg, job.taxonomy, device, job.keywords, stored_class_features(job.init_state))
    bundle.model.load_state_dict(job.init_state, strict=not cfg.classifier.freeze_encoder)
    documents = job.documents
    docs = (bundle.docs(documents, desc=f"stage {job.stage}: embedding documents") if isinstance(documents, list)
            else DocBatches(embeddings=torch.from_numpy(np.asarray(documents, dtype=np.float32))))
    if watch is not None:
        watch(bundle.model)
    seed_stage(cfg.seed, job.stage)  # the model is built and loaded: what follows is the stage's own randomness
    if job.stage == 3:
        stats = train_classifier(bundle.model, docs, job.targets, job.mask, cfg.classifier, device, cfg.seed, log,
                                 cfg.tracking.log_interval, env=env)
    else:
        stats = self_train(bundle.model, docs, cfg.self_training, device, cfg.seed, log, cfg.classifier.amp,
                           cfg.evaluation.batch_size, env=env, silver=job.silver, train_gnn=cfg.classifier.gnn_learning_rate > 0)
    model = bundle.model
    state = model.head_state_dict() if cfg.classifier.freeze_encoder else model.state_dict()
    return stats, {k: v.detach().cpu() for k, v in state.items()}
