"""The end of a search: the trials table, how well the objective tracked held-out quality, and
whether the winner beats the default configuration, said plainly (trials.md, trials.csv)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import yaml

from taxoclass.config import Config, flatten, to_dict, unflatten, with_values
from taxoclass.errors import ConfigError

OBJECTIVE = "objective"
HELD_OUT = "test/example_f1"  # the held-out score a trial logs for the record (never the objective)
STEPPED_ASIDE, DOCS_PER_LABEL = "stage3/stepped_aside", "stage3/docs_per_label"  # what a trial reports of its stage 3


def _number(v) -> float | None:
    return v if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return _number(a) is not None and _number(b) is not None and math.isclose(a, b, rel_tol=1e-9)
    return a == b


NODE = "node"


def is_default(config: dict, default_point: dict | None) -> bool:
    """Whether a trial's config is the default trial's point."""
    return bool(default_point) and all(_same(config.get(k), v) for k, v in default_point.items())


def trial_rows(records: list[dict], space_keys: list[str], columns: list[str], default_point: dict | None) -> list[dict]:
    """One row per trial record (record.py), in the order the trials started."""
    rows = []
    for r in records:
        m, config = r.get("metrics") or {}, r["config"]
        row = {"trial": r["trial"], "status": "error" if r["state"] == "error" else "ok",
               "reports": m.get("training_iteration", 0), "finished": HELD_OUT in m,
               "default": is_default(config, default_point)}
        row.update({k: config.get(k) for k in space_keys})
        row[OBJECTIVE] = m.get(OBJECTIVE)
        row.update({k: m.get(k) for k in columns})
        row[NODE] = m.get("node_ip")  # where it ran: Tune's own record (on a cluster, which node)
        rows.append(row)
    return rows


def rank_rows(rows: list[dict], mode: str) -> list[dict]:
    """Best objective first; trials without one last."""
    sign = 1 if mode == "min" else -1
    return sorted(rows, key=lambda row: (_number(row[OBJECTIVE]) is None, sign * (_number(row[OBJECTIVE]) or 0)))


def winner(rows: list[dict], mode: str) -> dict | None:
    """The trial with the best objective among those that finished without error (a stopped or failed
    trial's last report is an intermediate figure, and it has no model)."""
    ranked = [r for r in rank_rows(rows, mode) if r["status"] == "ok" and r["finished"] and _number(r[OBJECTIVE]) is not None]
    return ranked[0] if ranked else None


def objective_check(rows: list[dict], mode: str, held_out: str = HELD_OUT, objective: str = OBJECTIVE) -> dict | None:
    """Spearman correlation between the objective (signed so that higher = better) and the held-out
    score over the trials that have both, and the regret: the best held-out score minus that of the
    trial the objective picks. None with fewer than 3 such trials."""
    from scipy.stats import spearmanr

    pairs = [(_number(r[objective]), _number(r.get(held_out))) for r in rows]
    pairs = [(o if mode == "max" else -o, h) for o, h in pairs if o is not None and h is not None]
    if len(pairs) < 3:
        return None
    quality, held = zip(*pairs)
    # a constant side has no ranking: the correlation is undefined (scipy would warn and return nan)
    rho = float("nan") if len(set(quality)) == 1 or len(set(held)) == 1 else spearmanr(quality, held).statistic
    picked = max(pairs, key=lambda p: p[0])[1]
    return {"trials": len(pairs), "spearman": float(rho) if not math.isnan(rho) else float("nan"),
            "regret": max(held) - picked}


def all_alike(rows: list[dict]) -> str | None:
    """One line when every finished trial scored the same, with why when it can tell; else None."""
    done = [r for r in rows if r["status"] == "ok" and r["finished"] and _number(r[OBJECTIVE]) is not None]
    if len(done) < 2 or len({(r[OBJECTIVE], r.get(HELD_OUT)) for r in done}) > 1:
        return None
    line = f"Every trial scored the same ({OBJECTIVE} {done[0][OBJECTIVE]:.4g}): the trials' settings changed nothing."
    if all(r.get(STEPPED_ASIDE) == 1 for r in done):
        per_label = _number(done[0].get(DOCS_PER_LABEL))
        many = f"{per_label:.1f}" if per_label is not None else "too few"
        line = (f"Every trial scored the same ({OBJECTIVE} {done[0][OBJECTIVE]:.4g}): stage 3 stepped aside in every trial "
                f"(this set has {many} pseudo-labelled documents per label path, fewer than classifier.min_docs_per_label), so "
                "stage 3-4 keys change nothing; search stage-1 keys (similarity.refine_*) or classifier.min_docs_per_label.")
    return line


def verdict(rows: list[dict], mode: str) -> str:
    """Whether the winner beats the default trial, on the objective and on the held-out score."""
    best = winner(rows, mode)
    default = next((r for r in rows if r["default"]), None)
    if best is None:
        return "No trial finished with an objective: no winner."
    alike = all_alike(rows)
    if alike:
        return alike
    if default is None:
        return "No trial ran the default configuration: nothing to compare the winner with."
    if best is default:
        return f"The default configuration (trial {default['trial']}) won: the search found nothing better on the objective."
    if not default["finished"] or default["status"] != "ok":
        return f"The default trial ({default['trial']}) did not finish (stopped by ASHA or failed): the winner beat it only by ASHA's cut."
    text = (f"The winner (trial {best['trial']}) beats the default (trial {default['trial']}) on the objective: "
            f"{best[OBJECTIVE]:.4g} vs {default[OBJECTIVE]:.4g}.")
    w, d = _number(best.get(HELD_OUT)), _number(default.get(HELD_OUT))
    if w is not None and d is not None:
        if w > d:
            text += f" On held-out {HELD_OUT} it is better too: {w:.4f} vs {d:.4f}."
        else:
            text += f" **On held-out {HELD_OUT} the winner does not beat the default: {w:.4f} vs {d:.4f}.**"
    return text


def markdown(rows: list[dict], mode: str) -> str:
    rows = rank_rows(rows, mode)
    cols = list(rows[0]) if rows else []
    if len({row.get(NODE) for row in rows}) <= 1:  # one machine: its address in every row says nothing
        cols = [c for c in cols if c != NODE]

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(row[c]) for c in cols) + " |" for row in rows]
    check = objective_check(rows, mode)
    md.append("")
    if check:
        md.append(f"Objective vs held-out {HELD_OUT} over {check['trials']} finished trials: Spearman "
                  f"{check['spearman']:.2f}, regret {check['regret']:.4f} (best held-out score minus that of the "
                  "trial the objective picks).")
    else:
        md.append(f"No objective check: fewer than 3 finished trials with held-out labels ({HELD_OUT}).")
    md.append("")
    md.append(verdict(rows, mode))
    return "\n".join(md)


def config_delta(cfg: Config) -> dict:
    """The settings of `cfg` that differ from the defaults, as a nested mapping (a config YAML)."""
    values, defaults = flatten(to_dict(cfg)), flatten(to_dict(Config()))
    return unflatten({key: value for key, value in values.items() if value != defaults[key]})


def write_best_config(user_base: Config, params: dict, trial_dir: Path | None, search_dir: Path, name: str) -> Path:
    """`best_config.yaml`: the user's base config (their --config/--preset and overrides, not what the
    search sets for itself) plus the winning parameters; the winner's full config beside it."""
    best = with_values(user_base, {**params, "run_name": f"best-{name}", "cache_dir": ""}, "the search's winner")
    path = search_dir / "best_config.yaml"
    path.write_text(yaml.safe_dump(config_delta(best), sort_keys=False), encoding="utf-8")
    if trial_dir is not None and (trial_dir / "config.yaml").is_file():
        shutil.copyfile(trial_dir / "config.yaml", search_dir / "best_trial_config.yaml")
    return path


def disk_use(folder: Path) -> int:
    """Bytes under `folder`, a hard-linked file (a run's model.pt is its cached stage output) once."""
    files = {}
    for f in folder.rglob("*"):
        if f.is_file():
            st = f.stat()
            files[(st.st_dev, st.st_ino)] = st.st_size
    return sum(files.values())


def finish(records: list[dict], keys: list[str], constants: dict, user_base: Config, search_dir: Path, name: str, mode: str,
           first: dict | None, columns: list[str]) -> None:
    """trials.md, trials.csv, best_config.yaml and the lines a user reads; `keys` the space's dimensions, `constants`
    its fixed settings, `columns` the metrics a trial reports."""
    for checkpoints in (search_dir / "runs").glob("*/ray"):  # a stopped trial's Train checkpoints: nothing resumes it now
        shutil.rmtree(checkpoints, ignore_errors=True)
    rows = trial_rows(records, keys, columns, first)
    md = markdown(rows, mode)
    (search_dir / "trials.md").write_text(md + "\n")
    with open(search_dir / "trials.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    print(md)
    best = winner(rows, mode)
    if best is None:  # the first failed trial's own line says why (a bad value, a missing file), not only that
        failed = [r for r in records if r.get("error")]
        why = f"; trial {failed[0]['trial']} failed: {failed[0]['error']}" if failed else ""
        raise ConfigError("objective", f"no trial of {name} finished with a finite objective{why}; see {search_dir}")
    trial_id = best["trial"]
    params = {**constants, **{k: best[k] for k in keys if best.get(k) is not None}}
    path = write_best_config(user_base, params, search_dir / "runs" / str(trial_id), search_dir, name)
    size = disk_use(search_dir)
    print(f"best trial {trial_id}: {OBJECTIVE}={best[OBJECTIVE]:.4f}; taxoclass run --config {path}\n"
          f"search folder {search_dir}: {size / 2**20:.0f} MiB (the cache holds each trial's models)")
