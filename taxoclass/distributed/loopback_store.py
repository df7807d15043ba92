"""Ray Train's torch process group on a local instance, its rendezvous store listening on loopback only.

Ray Train's torch backend starts the group through torch's `env://` rendezvous, whose TCPStore server
(on rank 0) listens on every interface whatever MASTER_ADDR says (`ss -ltn`: `*:PORT`, during stages
3 and 4): a port open to the network, where every other port of a local instance is on 127.0.0.1.
torch has no setting for the store's address, but it listens on a socket it is given
(`master_listen_fd`). So `LoopbackTorchConfig` (a `TorchConfig`, Ray Train's own extension point)
has rank 0 bind a socket to 127.0.0.1 and host the store on it, and every rank, rank 0 too, join it as
a client (`TORCHELASTIC_USE_AGENT_STORE=True`: torch's switch for a store hosted by someone else); the
process group is then set up by Ray's own function, as Ray's backend does.

A cluster (`ray.address` set) keeps Ray's default: its workers on other nodes must reach the store.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

LOOPBACK = "127.0.0.1"
_hosted: list = []  # rank 0's listening socket and store server, alive as long as its worker


def host_store(timeout_s: int) -> int:
    """On rank 0: a TCPStore server on a socket bound to loopback; returns its port."""
    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    store = dist.TCPStore(LOOPBACK, port, is_master=True, wait_for_workers=False, master_listen_fd=sock.fileno(),
                          timeout=timedelta(seconds=timeout_s))
    _hosted[:] = [sock, store]
    return port


def join_store(port: int) -> None:
    """On every rank: `env://` reaches the loopback store as a client."""
    os.environ.update({"MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True"})


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        port = worker_group.execute_single(0, host_store, timeout_s=backend_config.timeout_s)
        worker_group.execute(join_store, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([worker_group.execute_single_async(rank, _setup_torch_process_group, backend=backend_config.backend or "gloo",
                                                   world_rank=rank, world_size=len(worker_group), init_method="env://",
                                                   timeout_s=backend_config.timeout_s)
                 for rank in range(len(worker_group))])


class LoopbackTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
