"""The run's summary (`summary.json`), and the zero-shot baselines every evaluation reports.

Features:
- `summarize`: the stats of every stage the final model comes from, the last value of every
  metric logged, the evaluation's, `total_seconds`, `total_encoder_passes` (`encoder_passes`: the
  run's, not the attempt's) and the run dir, written to `summary.json` (strict JSON) and handed to
  the sink (`on_finish`): the one summary of `run_pipeline` and of `taxoclass stage 5`, the same
  whichever stages were computed and which came from the cache (only `total_seconds` differs);
- `zero_shot_baselines`: the name-only stage-1 scores decoded flat (top-3), by the greedy
  top-down path and by the best path (the pipeline's own decoder, the fixed baseline training
  must beat), the best path of the refined scores, `test/gain_over_zeroshot` and `test/gain_over_enriched`
  (absent when their baseline scored 0: the ratio is undefined).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from taxoclass.atomic import write_json
from taxoclass.data.taxonomy import ROOT, Taxonomy
from taxoclass.hier_metrics import hierarchical_metrics
from taxoclass.metrics import evaluate_rankings, example_f1, prefixed

if TYPE_CHECKING:
    from taxoclass.pipeline.context import RunContext


def summarize(ctx: RunContext, evaluation: dict) -> dict:
    """summary.json: every metric's last value (cached stages replayed theirs), the evaluation's, the time."""
    summary: dict = {}
    for stage in range(1, ctx.view.final_stage() + 1):
        # a stage this attempt did not report (`stage 5` loads stages 1 and the final one) speaks from its entry
        if stage not in ctx.reported and ctx.view.store.intact(stage):
            summary.update(ctx.view.store.stats(stage))
    summary.update({**ctx.log.stats, **evaluation, "total_seconds": time.time() - ctx.started, "run_dir": str(ctx.dir)})
    summary["total_encoder_passes"] = encoder_passes(ctx, summary.get("stage1/encoder_passes", 0))
    write_json(ctx.dir / "summary.json", summary)
    ctx.sink.on_finish(summary)
    return summary


def encoder_passes(ctx: RunContext, stage1: int) -> int:
    """The texts the run's results took through an encoder into vectors, each once, whatever came from the cache and
    wherever it ran: stage 1's (`stage1/encoder_passes`), the frozen classifier's own document vectors when they are
    not stage 1's, and the class texts its head starts from when it does not start at stage 1's prototypes. (A
    fine-tuned encoder's training and prediction passes are not vectors, and not counted.)"""
    from taxoclass.pipeline.vectors import takes_stage1_vectors

    cfg, inputs = ctx.cfg, ctx.inputs
    total = stage1
    if cfg.classifier.freeze_encoder and not takes_stage1_vectors(cfg):
        total += len(inputs.corpus.texts)
        if inputs.test is not None and not inputs.test_is_corpus:
            total += len(inputs.test.texts)
    if ctx.class_init() is None:
        total += len(inputs.taxonomy)
    return total


def zero_shot_baselines(stage1: dict[str, np.ndarray], golds: list[list[int]], taxonomy: Taxonomy, pipeline_f1: float) -> dict:
    """The baselines of stage 1's test scores, and what the pipeline adds over the best of them."""
    test_sim = stage1.get("test")
    if test_sim is None:
        return {}
    names = stage1.get("names_test")
    if names is None:  # no refinement: the stage-1 scores are the name-only scores
        out = zero_shot_metrics(test_sim, golds, taxonomy)
    else:
        out = zero_shot_metrics(names, golds, taxonomy, enriched=test_sim)
    # what stages 2-4 and the enrichment add over the free name-only decoder, on the same protocol; and what
    # training adds over the refined prototypes it starts from. A ratio over a baseline that scored 0 is undefined:
    # no key (a floor of 1e-12 stored 6666666666.667x), and the run's last line says so (`report.headline_line`)
    for gain, baseline in (("test/gain_over_zeroshot", "zeroshot/bestpath_example_f1"),
                           ("test/gain_over_enriched", "zeroshot/enriched_bestpath_example_f1")):
        if out.get(baseline, 0) > 0:
            out[gain] = pipeline_f1 / out[baseline]
    return out


def zero_shot_metrics(sim: np.ndarray, golds: list[list[int]], taxonomy: Taxonomy, enriched: np.ndarray | None = None) -> dict:
    """The zero-shot baselines of the name-only stage-1 scores `sim`: flat (top-3 of the scored classes),
    greedy path (top-down, the path alone) and best path (the pipeline's own decoder, on the same top-3
    protocol as the pipeline: the fixed baseline training must beat); with `enriched` (the scores after
    prototype refinement) the best path of those too."""
    from taxoclass.decoding import rank, rank_with_paths, similarity_best_paths

    filled = np.where(np.isnan(sim), -np.inf, sim)
    ranked, _ = rank(filled, 0)
    out = prefixed(evaluate_rankings(ranked.tolist(), golds, taxonomy.levels), "zeroshot")
    paths = [greedy_path(row, taxonomy) for row in filled]
    out["zeroshot/path_example_f1"] = float(np.mean([example_f1(p, set(g), k=len(p)) for p, g in zip(paths, golds)]))
    out.update(prefixed(hierarchical_metrics(ranked.tolist(), golds, taxonomy, paths=paths), "zeroshot"))  # path: the greedy one
    for name, scores in (("bestpath", sim), ("enriched_bestpath", enriched)):
        if scores is None:
            continue
        best = similarity_best_paths(scores, taxonomy)
        top3, _ = rank_with_paths(np.where(np.isnan(scores), -np.inf, scores), best, 3)
        out[f"zeroshot/{name}_example_f1"] = float(np.mean([example_f1(list(r), set(g), k=3) for r, g in zip(top3, golds)]))
        hier = hierarchical_metrics(top3.tolist(), golds, taxonomy, paths=best)
        out.update({f"zeroshot/{name}_{k}": v for k, v in hier.items() if "hier_" in k})
        # the path alone, as the figure was reported before (not comparable with the top-3 protocol)
        out[f"zeroshot/{name}_path_only_example_f1"] = float(np.mean([example_f1(p, set(g), k=len(p)) for p, g in zip(best, golds)]))
    return out


def greedy_path(scores: np.ndarray, taxonomy: Taxonomy) -> list[int]:
    """At each level the most similar child, from ROOT down to a leaf."""
    path, node = [], ROOT
    while taxonomy.children(node):
        node = max(taxonomy.children(node), key=lambda c: (scores[c], -c))
        path.append(node)
    return path
