"""What `runtime=ray` checks before any work: a run, a stage and the search alike.

- `check_ray(ray_cfg)`: the cluster at `ray.address` answers as Ray does (`ray_address.py`, within
  10 s), and `ray.storage_path` opens and takes a write (`storage.py`, within `ray.storage_wait_s`);
  each problem is one ConfigError line naming its key, exit status 2, before a run dir or a search
  folder is made. Neither check starts Ray.
"""

from __future__ import annotations

from taxoclass.distributed.ray_address import check_reachable
from taxoclass.distributed.storage import check_writable


def check_ray(ray_cfg) -> None:
    check_reachable(ray_cfg.address)
    check_writable(ray_cfg.storage_path, ray_cfg.storage_wait_s)
