"""What a run reports to experiment tracking: the interface between the engine and `tracking.py`.

Features:
- `Sink`: the metrics (`sink(metrics, step=N)`, every dict the pipeline logs) and the run's
  lifecycle hooks: its start, the model being trained, a file worth keeping (an artifact), the
  evaluation's plain data (for tables and charts), its finish, and `close` after a failure;
- every method does nothing here: `Sink()` is tracking off, and a tracker overrides what it
  records (`taxoclass/tracking.py`, the only module that imports wandb). The pipeline writes
  `metrics.jsonl` itself, whatever the sink.
"""

from __future__ import annotations

from pathlib import Path


class Sink:
    """Tracking off; a tracker subclasses it."""

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        """Metrics as the pipeline logs them; `step` is stage 3's global step, else None."""

    def on_start(self, run_dir: Path, cfg, info: dict) -> None:
        """The run dir is ready; `info` holds the dataset's name and checksum."""

    def on_model(self, model) -> None:
        """Stage 3's model, before it trains (gradient watching)."""

    def on_artifact(self, name: str, kind: str, path: Path, metadata: dict | None = None) -> None:
        """A file worth keeping: a stage's output (`stage-output`) or the final model (`model`)."""

    def on_evaluation(self, ev: dict) -> None:
        """The evaluation's data: taxonomy, doc_ids, texts, ranked class indices, golds."""

    def on_finish(self, summary: dict) -> None:
        """The run's summary, once summary.json is written."""

    def close(self) -> None:
        """End tracking (after a failure: a no-op once `on_finish` ran)."""
