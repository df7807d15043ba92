"""A local Ray instance for this process, bound to loopback.

Features:
- `start_local_ray`: a local instance listening on 127.0.0.1 only; its workers inherit this
  process's environment (model hub, wandb settings), in memory;
- `worker_env`: what workers on a cluster's nodes get from the driver: the model-hub and wandb
  settings, never a secret (Ray writes a runtime_env into its session folder);
- `bind_to_loopback`: Ray's "no cluster" switch, without which it listens on the host's address;
- `join_or_start`: join `ray.address`, or start a local instance on loopback, saying whether it was
  started here (the caller then ends it with `ray.shutdown()`; never `ray stop`); which instance,
  and a dead address: `ray_address.py`;
- used by the Ray runtime (`ray_runtime.py`), batch prediction (`ray_predict.py`) and the search
  (`taxoclass/search/tuner.py`); Ray is imported only when an instance starts.
"""

from __future__ import annotations

import os
import sys

from taxoclass.distributed.ray_address import ignored_ray_address, joined

SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def is_secret(name: str) -> bool:
    """`WANDB_API_KEY`, `HF_TOKEN` and their like: never handed to Ray."""
    return any(word in name.upper() for word in SECRET_WORDS)


def worker_env() -> dict[str, str]:
    """The environment a cluster's workers get from the driver (offline model hub, wandb mode), for a runtime_env.

    No secret: Ray writes each runtime_env it sets up into its session folder (`logs/runtime_env_agent.log`, mode
    0644, kept after the run), so an API key there is on disk in clear text. A cluster's nodes keep their own
    credentials (`wandb login`, `huggingface-cli login`); the tracker that uses the wandb key runs on the driver.
    """
    return {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "WANDB_")) and not is_secret(k)}


def bind_to_loopback() -> None:
    """Make a local Ray instance listen on 127.0.0.1 only.

    Ray rewrites `_node_ip_address="127.0.0.1"` to the host's address (and its GCS, raylet and
    object manager then listen there) unless its "no cluster" switch is on, which it reads at
    import: set it in the environment (for the workers) and in the loaded module (for us).
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def start_local_ray(num_cpus: int | None = None, dashboard: bool = False, **kwargs) -> None:
    """A local Ray instance on loopback. Its processes are this one's children and inherit its environment (the hub
    and wandb settings, and the secrets, in memory only): no runtime_env, which Ray would write to disk.

    `dashboard`: Ray's State API, which Ray Train's placement-group cleaner needs to notice that a
    Train run's driver was killed (a Tune trial stopped early); without it the run's workers'
    resources stay reserved until Ray ends. It listens on 127.0.0.1 too.
    """
    bind_to_loopback()
    import ray

    note = ignored_ray_address("")
    if note:
        print(f"taxoclass: note: {note}", file=sys.stderr, flush=True)
    # address="local": Ray's own word for a new instance; with none, Ray would join the cluster RAY_ADDRESS names
    ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=dashboard, _node_ip_address="127.0.0.1",
             **kwargs)


def join(address: str, **kwargs) -> None:
    """Join the cluster at `address` (`auto`: the one RAY_ADDRESS or `ray start` names); one that cannot be reached is
    a one-line ConfigError at once."""
    import ray

    joined(address, lambda: ray.init(address=address, **kwargs))


def join_or_start(ray_cfg, dashboard: bool = False, **kwargs) -> bool:
    """Join the cluster at `ray.address` (its workers get `worker_env()`), or with none start a local instance on
    loopback (`ray.num_cpus`; `dashboard`: see `start_local_ray`); nothing when this process is already connected.
    True when the instance was started here: the caller ends it with `ray.shutdown()`."""
    import ray

    if ray.is_initialized():
        return False
    if ray_cfg.address:
        join(ray_cfg.address, runtime_env={"env_vars": worker_env()}, include_dashboard=False, **kwargs)
        return False
    start_local_ray(ray_cfg.num_cpus, dashboard=dashboard, **kwargs)  # a local instance serves this process only
    return True
