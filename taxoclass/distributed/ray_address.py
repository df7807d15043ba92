"""Which Ray instance a run uses: the config's `ray.address` decides, never the shell alone.

Features:
- an empty `ray.address` is a private local instance; a `RAY_ADDRESS` in the environment is then
  ignored with a one-line note (`ignored_ray_address`), since joining whatever cluster the shell
  points at would send the run's data there; `ray.address=auto` joins the cluster `RAY_ADDRESS`
  (or `ray start` on this machine) names, as Ray's own `address="auto"` does;
- `check_reachable`: a cluster address is tried before Ray is asked to join it, within
  `PROBE_SECONDS` in all: one TCP connection, then one call that only Ray answers (its GCS's
  `GetClusterId`; for `ray://`, the Ray Client server's `PING`). Ray itself retried a dead
  address for minutes ("Failed to connect to GCS"), and one where another service listens (an
  HTTP server) for over 10 minutes, deaf to SIGTERM, without an error: each is one `ConfigError`
  line, exit status 2;
- Ray is imported only by the probe (its gRPC stubs), when a cluster address is given: the command
  line checks the address before any work.
"""

from __future__ import annotations

import os
import re
import socket
import time

from taxoclass.errors import ConfigError

PROBE_SECONDS = 10
RULE = ("runtime=ray: an empty ray.address (the default) starts a private local Ray instance on 127.0.0.1, and a "
        "RAY_ADDRESS in the environment is then ignored (with a note); ray.address=auto joins the cluster RAY_ADDRESS "
        "(or `ray start` on this machine) names; ray.address=HOST:PORT or ray://HOST:PORT joins that one. An address "
        f"that does not answer as Ray does within {PROBE_SECONDS} s is an error before any work.")
HOW = "start it (ray start --head) or fix the address; an empty ray.address starts a local instance"


def ignored_ray_address(address: str) -> str | None:
    """The note for a `RAY_ADDRESS` that an empty `ray.address` sets aside, or None."""
    env = os.environ.get("RAY_ADDRESS")
    if address or not env:
        return None
    return (f"RAY_ADDRESS={env} is ignored: ray.address is empty, which starts a private local Ray instance "
            f"(ray.address=auto joins the cluster RAY_ADDRESS names)")


def check_reachable(address: str) -> None:
    """A ConfigError, within `PROBE_SECONDS`, when the cluster at `address` (for `auto`, `RAY_ADDRESS`) takes no
    connection or does not answer as Ray does."""
    env = os.environ.get("RAY_ADDRESS")
    target = env if address == "auto" and env else address
    if not target or target == "auto":  # Ray looks for a `ray start` on this machine, and says at once if there is none
        return
    where = f"ray.address=auto joins RAY_ADDRESS={target}, which" if target != address else f"a Ray cluster at {target}"
    host, _, port = target.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError("ray.address", f"expected 'auto', HOST:PORT or ray://HOST:PORT (empty: a local instance), got "
                                         f"{'RAY_ADDRESS=' if target != address else ''}{target!r}")
    deadline = time.monotonic() + PROBE_SECONDS
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except TimeoutError:
        raise ConfigError("ray.address", f"{where} does not answer within {PROBE_SECONDS} s; {HOW}") from None
    except OSError as err:
        raise ConfigError("ray.address", f"{where} cannot be reached ({err.strerror or err}); {HOW}") from None
    client = target.startswith("ray://")
    answer = not_ray(target.split("://", 1)[-1].rstrip("/"), client, max(1.0, deadline - time.monotonic()))
    if answer:
        what = "a Ray Client server" if client else "a Ray cluster's GCS"
        raise ConfigError("ray.address", f"{where} takes connections but does not answer as {what} does ({answer}); {HOW}")


def not_ray(target: str, client: bool, timeout: float) -> str | None:
    """None when the server at `target` (HOST:PORT) answers as Ray does, else what it did instead.

    One unary call, its deadline `timeout`: the GCS's `GetClusterId` (the first call of a joining
    driver), or with `client` the Ray Client server's `PING`. The channel is Ray's own (TLS when
    RAY_USE_TLS is set, the cluster's token when RAY_AUTH_MODE=token), and a refusal for want of a
    token is an answer from Ray too. An HTTP server answers at once ("Failed parsing HTTP/2"), a
    silent one not before the deadline.
    """
    import grpc

    if client:
        from ray.core.generated import ray_client_pb2 as pb
        from ray.core.generated import ray_client_pb2_grpc as rpc

        def call(channel):
            return rpc.RayletDriverStub(channel).ClusterInfo(pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=timeout)
    else:
        from ray.core.generated import gcs_service_pb2 as pb
        from ray.core.generated import gcs_service_pb2_grpc as rpc

        def call(channel):
            return rpc.NodeInfoGcsServiceStub(channel).GetClusterId(pb.GetClusterIdRequest(), timeout=timeout)

    options = [("grpc.enable_http_proxy", 0)]  # the address itself, as the TCP check above, never a proxy
    try:
        from ray._private.grpc_utils import init_grpc_channel

        channel = init_grpc_channel(target, options=options)
    except ImportError:  # another Ray version: a plain channel (a token refusal still counts as Ray's)
        channel = grpc.insecure_channel(target, options=options)
    with channel:
        try:
            call(channel)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no answer within {PROBE_SECONDS} s"
            # "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:HOST:PORT: Failed parsing HTTP/2 (...)"
            details = re.sub(r"^(\w+: )?(ipv[46]:\S+: )?", "", (err.details() or "").split("last error: ")[-1].strip())
            return f"gRPC {err.code().name}: {details}" if details else f"gRPC {err.code().name}"
    return None


def joined(address: str, init) -> None:
    """`init()` (Ray's, joining `address`), its failure to find or join the cluster one ConfigError line."""
    check_reachable(address)
    try:
        init()
    except ConnectionError as err:
        raise ConfigError("ray.address", f"cannot join a Ray cluster at {address}: {str(err).strip().splitlines()[0]}") from None
