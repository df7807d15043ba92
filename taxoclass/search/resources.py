"""What one trial holds, checked against the cluster before the search starts.

A trial of one worker (the default; `--gpus-per-trial` up to 1) trains in its own Tune process,
which holds `cpus_per_worker` CPUs and its GPU share: a stage-3 head on frozen vectors trains in
seconds, and a Ray Train worker group took longer to start than that (about 20 s of a 30-s
relaclass trial on 2 cores). `--gpus-per-trial N` from 2 on makes a trial a Tune function
(`TRIAL_CPUS`: it loads the shared stages and evaluates) that starts a Ray Train run of N DDP
workers, each holding `cpus_per_worker` CPUs and one GPU. Ray Train's controller and the wandb
logging actor hold no resources (both are scheduled with num_cpus=0 in Ray 2.60). A trial that
does not fit would wait forever, so `plan_trials` shrinks it to fit (with a one-line notice) or
raises a one-line ConfigError.

`--gpus-per-trial` below 1 packs trials on a GPU (0.25: four trials per GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taxoclass.errors import ConfigError

TRIAL_CPUS = 1.0


@dataclass
class TrialPlan:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0: CPU training
    concurrent: int  # trials at once
    notices: list[str]

    @property
    def in_process(self) -> bool:
        """One worker: the trial trains in its own process, with no Ray Train worker group."""
        return self.workers == 1

    @property
    def cpus(self) -> float:
        return self.cpus_per_worker if self.in_process else TRIAL_CPUS + self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker

    def resources(self) -> dict[str, float]:
        """What the trial's own Tune process holds (its Train workers, if any, hold their own)."""
        if self.in_process:
            return {"cpu": self.cpus_per_worker, **({"gpu": self.gpus_per_worker} if self.gpus_per_worker else {})}
        return {"cpu": TRIAL_CPUS}

    def describe(self) -> str:
        where = f"{self.gpus_per_worker:g} GPU + " if self.gpus_per_worker else ""
        if self.in_process:
            return f"each trial: one process ({where}{self.cpus_per_worker:g} CPU); {self.concurrent} trial(s) at once"
        return (f"each trial: {self.workers} Train workers x ({where}{self.cpus_per_worker:g} CPU) + {TRIAL_CPUS:g} CPU "
                f"for the trial; {self.concurrent} trial(s) at once")

    def settings(self) -> dict:
        """The `ray.*` keys a trial runs with (for `with_values`)."""
        return {"ray.num_workers": self.workers, "ray.cpus_per_worker": self.cpus_per_worker,
                "ray.use_gpu": self.gpus_per_worker > 0, "ray.gpus_per_worker": self.gpus_per_worker or 1.0}


def plan_trials(gpus_per_trial: float, cpus_per_worker: float, cluster: dict, max_concurrent: int | None = None) -> TrialPlan:
    """The trial shape that fits `cluster` (ray.cluster_resources()), or a ConfigError saying why none does."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    notices = []
    if gpus_per_trial < 0:
        raise ConfigError("--gpus-per-trial", f"must be 0 or more, got {gpus_per_trial:g}")
    if gpus_per_trial == 0:
        workers, per_gpu = 1, 0.0
    else:
        if gpus == 0:
            raise ConfigError("--gpus-per-trial", f"{gpus_per_trial:g} GPUs asked, but the Ray cluster has no GPU")
        if gpus_per_trial < 1:
            workers, per_gpu = 1, gpus_per_trial
        elif gpus_per_trial != int(gpus_per_trial):
            raise ConfigError("--gpus-per-trial", f"{gpus_per_trial:g}: below 1 a share of one GPU, from 1 on a whole number")
        else:
            workers, per_gpu = int(gpus_per_trial), 1.0
            if workers > gpus:
                workers = int(gpus)
                notices.append(f"--gpus-per-trial {gpus_per_trial:g} does not fit the cluster's {gpus:g} GPUs: "
                               f"{workers} Train workers per trial instead")
    if workers > 1:
        fit = math.floor((cpus - TRIAL_CPUS) / cpus_per_worker + 1e-9) if cpus_per_worker > 0 else workers
        if fit < workers:
            fit = fit if fit >= 2 else 1  # one worker: the trial trains in its own process, holding its CPUs
            notices.append(f"--gpus-per-trial {gpus_per_trial:g}: {workers} Train workers do not fit the cluster's {cpus:g} "
                           f"CPUs next to the trial's own {TRIAL_CPUS:g}: {fit} per trial instead")
            workers = fit
    if workers == 1 and cpus_per_worker > cpus:
        raise ConfigError("ray.cpus_per_worker", f"one trial needs {cpus_per_worker:g} CPUs but the Ray cluster has {cpus:g}; "
                          "lower ray.cpus_per_worker or raise ray.num_cpus")
    plan = TrialPlan(workers, cpus_per_worker, per_gpu, 1, notices)
    fits = int(cpus // plan.cpus + 1e-9) if plan.cpus else math.inf  # trials of no CPU: the GPUs alone bound them
    if plan.gpus:
        fits = min(fits, int(gpus // plan.gpus + 1e-9))
    plan.concurrent = max_concurrent or max(1, fits if fits != math.inf else 1)
    return plan
