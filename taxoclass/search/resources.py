"""What one trial holds, checked against the cluster before the search starts.

A trial is a Tune function (it holds `TRIAL_CPUS`: it loads the shared stages and evaluates)
that starts a Ray Train run of `workers` workers, each holding `cpus_per_worker` CPUs and,
on GPUs, `gpus_per_worker` of a GPU. Ray Train's controller and the wandb logging actor
hold no resources (both are scheduled with num_cpus=0 in Ray 2.60). A trial that does not
fit would wait for its worker group forever, so `plan_trials` shrinks it to fit (with a
one-line notice) or raises a one-line ConfigError.

`--gpus-per-trial` below 1 packs trials on a GPU: one worker holding that share
(0.25: four trials per GPU). From 1 on it must be whole: that many DDP workers, one GPU each.
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
    def cpus(self) -> float:
        return TRIAL_CPUS + self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker

    def describe(self) -> str:
        where = f"{self.gpus_per_worker:g} GPU + " if self.gpus_per_worker else ""
        return (f"each trial: {self.workers} Train worker(s) x ({where}{self.cpus_per_worker:g} CPU) + {TRIAL_CPUS:g} CPU "
                f"for the trial; {self.concurrent} trial(s) at once")

    def apply(self, cfg) -> None:
        r = cfg.ray
        r.num_workers, r.cpus_per_worker = self.workers, self.cpus_per_worker
        r.use_gpu, r.gpus_per_worker = self.gpus_per_worker > 0, self.gpus_per_worker or 1.0


def plan_trials(gpus_per_trial: float, num_workers: int, cpus_per_worker: float, cluster: dict,
                max_concurrent: int | None = None) -> TrialPlan:
    """The trial shape that fits `cluster` (ray.cluster_resources()), or a ConfigError saying why none does."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    notices = []
    if gpus_per_trial < 0:
        raise ConfigError("--gpus-per-trial", f"must be 0 or more, got {gpus_per_trial:g}")
    if gpus_per_trial == 0:
        workers, per_gpu = num_workers, 0.0
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
    fit = math.floor((cpus - TRIAL_CPUS) / cpus_per_worker + 1e-9) if cpus_per_worker > 0 else workers
    if fit < 1:
        raise ConfigError("ray.cpus_per_worker", f"one trial needs {TRIAL_CPUS + cpus_per_worker:g} CPUs ({TRIAL_CPUS:g} for the "
                          f"trial, {cpus_per_worker:g} per Train worker) but the Ray cluster has {cpus:g}; "
                          "lower ray.cpus_per_worker or raise ray.num_cpus")
    if workers > fit:
        notices.append(f"ray.num_workers={workers} does not fit the cluster's {cpus:g} CPUs next to the trial's own "
                       f"{TRIAL_CPUS:g}: {fit} Train worker(s) per trial instead")
        workers = fit
    plan = TrialPlan(workers, cpus_per_worker, per_gpu, 1, notices)
    fits = int(cpus // plan.cpus + 1e-9)
    if plan.gpus:
        fits = min(fits, int(gpus // plan.gpus + 1e-9))
    plan.concurrent = max_concurrent or max(1, fits)
    return plan
