"""Experiment tracking: the only module that imports wandb.

Features:
- `make_tracker(cfg)` returns a sink for `run_pipeline` (`taxoclass/sink.py`'s interface): every metric still goes to the run
  dir's `metrics.jsonl` (the pipeline writes it); with `tracking.use_wandb` (or `USE_WANDB=1`)
  it also goes to Weights & Biases;
- `WANDB_MODE=online|offline|disabled` (or `tracking.mode`) is honoured; wandb not installed:
  one warning, the run goes on; online asked for with no API key, or the server unreachable:
  a warning and an offline run, never a crash or a hang;
- stage-3 curves use `global_step`, stage-4 curves `stage4/iteration` (`define_metric`);
- the run record: resolved config, seed, git commit, torch / CUDA / transformers / ray
  versions, dataset checksum; the summary: `final_accuracy`, `final_f1`,
  `training_time_hours` and every test metric;
- pictures and tables: a confusion matrix per taxonomy level, a class-wise table, prediction
  examples, the stage-4 progress table; artifacts: the model and the stage outputs;
- resume: the wandb run id is kept in `<run_dir>/tracking.json`, and `resume=` continues it.
"""

from __future__ import annotations

import json
import netrc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from taxoclass.config import Config, to_dict
from taxoclass.errors import warn
from taxoclass.hier_metrics import class_wise
from taxoclass.sink import Sink
from taxoclass.stages.similarity import classifier_encoder

DEFAULT_HOST = "api.wandb.ai"
ONLINE_INIT_TIMEOUT_S = 30
EXAMPLES_LOGGED = 20


def default_run_name(cfg: Config) -> str:
    """The seed's naming: taxo_<encoder>_gnn<layers>_lr<lr>_bs<batch>."""
    c, name = cfg.classifier, classifier_encoder(cfg)
    encoder = "minilm" if name == "bundled" else Path(name).name.replace("/", "-")
    return f"taxo_{encoder}_gnn{c.gnn_num_layers}_lr{c.learning_rate:g}_bs{c.batch_size}"


def has_api_key(environ=os.environ) -> bool:
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = environ.get("WANDB_BASE_URL", DEFAULT_HOST).split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(cfg: Config, environ=os.environ) -> str:
    mode = cfg.tracking.mode or environ.get("WANDB_MODE", "") or "online"
    if mode in ("dryrun",):
        mode = "offline"
    if mode == "online" and not has_api_key(environ):
        warn("wandb online mode requested but no API key found (WANDB_API_KEY or `wandb login`); logging offline. "
             "Upload later with `wandb sync`.")
        mode = "offline"
    return mode


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record() -> dict:
    import torch

    record = {"torch_version": torch.__version__, "cuda_version": torch.version.cuda or "none",
              "cuda_available": torch.cuda.is_available(), "git_commit": git_commit(), "python_version": sys.version.split()[0]}
    for pkg in ("transformers", "ray", "torch_geometric"):
        try:
            record[f"{pkg}_version"] = __import__(pkg).__version__
        except Exception:  # an absent package is worth a record, not a failure
            record[f"{pkg}_version"] = "not installed"
    return record


class NullTracker(Sink):
    """Tracking off: the pipeline's metrics.jsonl is the whole record."""

    enabled = False


class WandbTracker(Sink):
    """A pipeline sink that mirrors metrics, tables and artifacts to one wandb run."""

    enabled = True

    def __init__(self, cfg: Config, wandb_module, mode: str, resume_id: str | None = None):
        self.cfg = cfg
        self.wandb = wandb_module
        self.mode = mode
        self.resume_id = resume_id
        self.run = None
        self.t0 = time.time()
        self.stage4_rows: list[list] = []
        self.watched = False

    # -- the Sink's hooks, called by the pipeline (the engine never imports wandb)
    def on_start(self, run_dir: Path, cfg: Config, info: dict) -> None:
        t = cfg.tracking
        record = {**to_dict(cfg), "seed": cfg.seed, **environment_record(), **info}
        state_file = Path(run_dir) / "tracking.json"
        resume_id = self.resume_id
        if resume_id is None and state_file.is_file():
            resume_id = json.loads(state_file.read_text()).get("wandb_run_id")
        kwargs = dict(project=t.project, entity=t.entity or None, name=t.run_name or default_run_name(cfg),
                      tags=list(t.tags) or None, group=t.group or None, job_type=t.job_type or None, config=record,
                      dir=str(run_dir), mode=self.mode, reinit="finish_previous")
        if resume_id:
            kwargs.update(id=resume_id, resume="must" if self.mode == "online" else "allow")
        settings = self.wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S, console="off", save_code=False)
        try:
            self.run = self.wandb.init(settings=settings, **kwargs)
        except Exception as err:  # an unreachable server must not end a training run
            if self.mode != "online":
                raise
            warn(f"wandb online init failed ({str(err).splitlines()[0][:200]}); logging offline")
            self.mode = kwargs["mode"] = "offline"
            kwargs.pop("resume", None)
            self.run = self.wandb.init(settings=settings, **kwargs)
        self.run.define_metric("global_step")
        self.run.define_metric("stage3/*", step_metric="global_step")
        self.run.define_metric("stage4/iteration")
        self.run.define_metric("stage4/*", step_metric="stage4/iteration")
        state_file.write_text(json.dumps({"wandb_run_id": self.run.id, "wandb_mode": self.mode, "project": t.project}) + "\n")

    def __call__(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if step is not None and any(k.startswith("stage3/") for k in row):
            row["global_step"] = step
        if "stage4/iteration" in row:
            self.stage4_rows.append([row.get(k) for k in STAGE4_COLUMNS])
        if row:
            self.run.log(row)

    def on_model(self, model) -> None:
        if self.run is not None and self.cfg.tracking.log_gradients and not self.watched:
            self.run.watch(model, log="gradients", log_freq=max(1, self.cfg.tracking.log_interval))
            self.watched = True

    def on_artifact(self, name: str, kind: str, path: Path, metadata: dict | None = None) -> None:
        if self.run is None or not Path(path).is_file():
            return
        art = self.wandb.Artifact(name=f"{self.run.id}-{name}", type=kind, metadata=metadata or {})
        art.add_file(str(path), name=Path(path).name if kind != "model" else "model.pt")
        self.run.log_artifact(art)

    def on_evaluation(self, ev: dict) -> None:
        """Tables and charts from the evaluation: plain data from the pipeline."""
        if self.run is None:
            return
        wandb = self.wandb
        tax, ranked, golds = ev["taxonomy"], ev["ranked"], ev["golds"]
        names = tax.names
        logs = {}
        for level in range(tax.num_levels):
            y_true, y_pred = level_pairs(tax, ranked, golds, level)
            if not y_true:
                continue
            present = sorted(set(y_true) | set(y_pred))
            index = {c: i for i, c in enumerate(present)}
            logs[f"test/confusion_matrix_level_{level}"] = wandb.plot.confusion_matrix(
                y_true=[index[c] for c in y_true], preds=[index[c] for c in y_pred], class_names=[names[c] for c in present],
                title=f"Confusion matrix, level {level}")
        table = wandb.Table(columns=["class", "level", "precision", "recall", "f1", "support"])
        for row in class_wise(tax, ranked, golds):
            table.add_data(*row)
        logs["test/class_metrics"] = table
        examples = wandb.Table(columns=["doc_id", "excerpt", "gold_path", "predicted_top3", "correct"])
        for i in range(min(EXAMPLES_LOGGED, len(ranked))):
            gold, top3 = set(golds[i]), list(ranked[i][:3])
            examples.add_data(ev["doc_ids"][i], ev["texts"][i][:300], " > ".join(names[c] for c in sorted(gold, key=tax.level)),
                              ", ".join(names[c] for c in top3), set(top3) == gold or (gold <= set(top3)))
        logs["test/prediction_examples"] = examples
        if self.stage4_rows:
            logs["stage4/progress"] = wandb.Table(columns=STAGE4_COLUMNS, data=self.stage4_rows)
        self.run.log(logs)

    def on_finish(self, summary: dict) -> None:
        if self.run is None:
            return
        for k, v in summary.items():
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                self.run.summary[k] = v
        self.run.summary["final_accuracy"] = summary.get("test/accuracy", float("nan"))
        self.run.summary["final_f1"] = summary.get("test/f1_score", float("nan"))
        self.run.summary["training_time_hours"] = (time.time() - self.t0) / 3600
        self.run.finish()
        self.run = None

    def close(self) -> None:
        """After a failure: end the wandb run marked as failed (a no-op after on_finish)."""
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


STAGE4_COLUMNS = ["stage4/iteration", "stage4/epoch", "stage4/confident_predictions", "stage4/confidence_ratio",
                  "stage4/avg_max_prediction", "stage4/avg_target_entropy", "stage4/self_train_loss", "stage4/top3_changed",
                  "stage4/val_loss"]


def level_pairs(tax, ranked, golds, level: int) -> tuple[list[int], list[int]]:
    """(gold, predicted) class at `level` for documents with a gold class there: the top-1 of that level."""
    y_true, y_pred = [], []
    for r, g in zip(ranked, golds):
        gold_here = [c for c in g if tax.level(c) == level]
        pred = next((c for c in r if tax.level(c) == level), None)
        if gold_here and pred is not None:
            y_true.append(pred if pred in gold_here else gold_here[0])
            y_pred.append(pred)
    return y_true, y_pred


def make_tracker(cfg: Config, resume_id: str | None = None):
    """A sink for the pipeline: wandb when asked for and possible, else a no-op."""
    if not cfg.tracking.use_wandb:
        return NullTracker()
    mode = cfg.tracking.mode or os.environ.get("WANDB_MODE", "")
    if mode == "disabled":
        return NullTracker()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import wandb
    except ImportError:
        warn("USE_WANDB is on but wandb is not installed (pip install wandb); metrics go to metrics.jsonl only")
        return NullTracker()
    return WandbTracker(cfg, wandb, resolve_mode(cfg), resume_id)
