"""Which Ray instance a run uses: the config's `ray.address` decides, never the shell alone.

Features:
- an empty `ray.address` is a private local instance; a `RAY_ADDRESS` in the environment is then
  ignored with a one-line note (`ignored_ray_address`), since joining whatever cluster the shell
  points at would send the run's data there; `ray.address=auto` joins the cluster `RAY_ADDRESS`
  (or `ray start` on this machine) names, as Ray's own `address="auto"` does;
- `check_reachable`: a cluster address is tried with one TCP connection of at most
  `PROBE_SECONDS` before Ray is asked to join it (Ray itself retried a dead address for minutes,
  "Failed to connect to GCS", without an error): one `ConfigError` line, exit status 2;
- Ray is not imported here: the command line checks the address before any work.
"""

from __future__ import annotations

import os
import socket

from taxoclass.errors import ConfigError

PROBE_SECONDS = 10
RULE = ("runtime=ray: an empty ray.address (the default) starts a private local Ray instance on 127.0.0.1, and a "
        "RAY_ADDRESS in the environment is then ignored (with a note); ray.address=auto joins the cluster RAY_ADDRESS "
        "(or `ray start` on this machine) names; ray.address=HOST:PORT or ray://HOST:PORT joins that one. An address "
        f"that takes no connection within {PROBE_SECONDS} s is an error before any work.")
HOW = "start it (ray start --head) or fix the address; an empty ray.address starts a local instance"


def ignored_ray_address(address: str) -> str | None:
    """The note for a `RAY_ADDRESS` that an empty `ray.address` sets aside, or None."""
    env = os.environ.get("RAY_ADDRESS")
    if address or not env:
        return None
    return (f"RAY_ADDRESS={env} is ignored: ray.address is empty, which starts a private local Ray instance "
            f"(ray.address=auto joins the cluster RAY_ADDRESS names)")


def check_reachable(address: str) -> None:
    """A ConfigError at once when the cluster at `address` (for `auto`, `RAY_ADDRESS`) takes no connection."""
    env = os.environ.get("RAY_ADDRESS")
    target = env if address == "auto" and env else address
    if not target or target == "auto":  # Ray looks for a `ray start` on this machine, and says at once if there is none
        return
    where = f"ray.address=auto joins RAY_ADDRESS={target}, which" if target != address else f"a Ray cluster at {target}"
    host, _, port = target.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError("ray.address", f"expected 'auto', HOST:PORT or ray://HOST:PORT (empty: a local instance), got "
                                         f"{'RAY_ADDRESS=' if target != address else ''}{target!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except TimeoutError:
        raise ConfigError("ray.address", f"{where} does not answer within {PROBE_SECONDS} s; {HOW}") from None
    except OSError as err:
        raise ConfigError("ray.address", f"{where} cannot be reached ({err.strerror or err}); {HOW}") from None


def joined(address: str, init) -> None:
    """`init()` (Ray's, joining `address`), its failure to find or join the cluster one ConfigError line."""
    check_reachable(address)
    try:
        init()
    except ConnectionError as err:
        raise ConfigError("ray.address", f"cannot join a Ray cluster at {address}: {str(err).strip().splitlines()[0]}") from None
