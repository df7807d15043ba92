"""What `runtime=ray` checks before any work (issue 35, items 1-3): no Ray is started here.

A `ray.address` where another service listens (an HTTP server) hung a run for over 10 minutes, deaf to
SIGTERM; `ray.storage_path=gs://...` without credentials hung at the start of stage 3; `nosuch://x`,
`file://rel/store` and `s3://...` without credentials ended in a traceback after stages 1-2. Each is one
line naming its key, exit status 2, before a run dir or a search folder is made. The cloud cases need no
network: in `make test`'s private network the write cannot reach the bucket, and the wait is bounded by
`ray.storage_wait_s` (2 s here).
"""

import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import REPO

from taxoclass.distributed import ray_address
from taxoclass.distributed.ray_address import check_reachable
from taxoclass.errors import ConfigError

HOW = "start it (ray start --head) or fix the address; an empty ray.address starts a local instance"


def _cli(*args, timeout=120):
    """The command in its own process; a hang is a failed test (`TimeoutExpired`), not a stuck suite."""
    return subprocess.run([sys.executable, "-m", "taxoclass.cli", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def _one_line(res, prog="taxoclass"):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), res.stderr[-3000:]
    return lines[0].removeprefix(f"{prog}: error: ")


@pytest.fixture
def http_server():
    """An HTTP server on a free loopback port: a service that takes connections and is not Ray."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_address_where_another_service_listens_is_one_line_at_once(http_server, tmp_path):
    not_gcs = (f"config key 'ray.address': a Ray cluster at {http_server} takes connections but does not answer as a Ray "
               f"cluster's GCS does (gRPC UNAVAILABLE: Failed parsing HTTP/2")
    for command, prog in ((["run", "--preset", "debug"], "taxoclass"), (["search", "--smoke"], "taxoclass search")):
        line = _one_line(_cli(*command, "runtime=ray", f"ray.address={http_server}", f"output_dir={tmp_path}", "run_name=x"), prog)
        assert line.startswith(not_gcs) and line.endswith(HOW), line
    line = _one_line(_cli("run", "--preset", "debug", "runtime=ray", f"ray.address=ray://{http_server}", f"output_dir={tmp_path}"))
    assert line.startswith(f"config key 'ray.address': a Ray cluster at ray://{http_server} takes connections but does not "
                           "answer as a Ray Client server does (gRPC UNAVAILABLE: Failed parsing HTTP/2"), line
    assert list(tmp_path.iterdir()) == []  # nothing written: no run dir, no search folder


def test_an_address_that_takes_a_connection_and_says_nothing_is_one_line_within_the_probe_time(monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # the kernel completes the handshake; nothing ever answers
    monkeypatch.setattr(ray_address, "PROBE_SECONDS", 1)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(ConfigError) as caught:
            check_reachable(address)
    finally:
        silent.close()
    assert str(caught.value) == (f"config key 'ray.address': a Ray cluster at {address} takes connections but does not answer "
                                 f"as a Ray cluster's GCS does (no answer within 1 s); {HOW}")


@pytest.mark.parametrize("storage, says", [
    ("nosuch://x", "'nosuch://x' is neither a path nor a URI pyarrow can open (Unrecognized filesystem type in URI: nosuch://x)"),
    ("file://rel/store", "'file://rel/store' is neither a path nor a URI pyarrow can open (Unsupported hostname in non-Windows "
                         "local URI: 'file://rel/store'; a file:// URI takes an absolute path, file:///path)"),
    ("s3://taxoclass-test-bucket/ray", "s3://taxoclass-test-bucket/ray "),
    ("gs://taxoclass-test-bucket/ray", "gs://taxoclass-test-bucket/ray "),
])
def test_a_storage_path_that_takes_no_write_is_one_line_before_any_work(tmp_path, storage, says):
    line = _one_line(_cli("run", "--preset", "debug", "runtime=ray", f"ray.storage_path={storage}", "ray.storage_wait_s=2",
                          f"output_dir={tmp_path}", "run_name=x"))
    assert line.startswith(f"config key 'ray.storage_path': {says}"), line
    if "://taxoclass-test-bucket" in storage:  # no credentials, no network: said within the wait, whichever comes first
        assert ("does not take a write within 2 s (ray.storage_wait_s): no credentials for it here, or no network to it?" in line
                or "cannot be written (OSError: " in line), line
    assert list(tmp_path.iterdir()) == []


def test_a_storage_path_on_a_disk_that_takes_no_write_is_one_line(tmp_path):
    from taxoclass.distributed.storage import check_writable

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=rf"^config key 'ray.storage_path': {blocker / 'ray'} cannot be written "
                                          r"\(NotADirectoryError: .*Not a directory\); Ray Train keeps the stages' checkpoints"):
        check_writable(str(blocker / "ray"), 2)
    check_writable(f"file://{tmp_path}/store", 2)  # a folder that takes files: made, and left empty
    assert list((tmp_path / "store").iterdir()) == []


def test_the_search_checks_its_storage_before_any_work(tmp_path):
    line = _one_line(_cli("search", "--smoke", "ray.storage_path=gs://taxoclass-test-bucket/ray", "ray.storage_wait_s=2",
                          f"output_dir={tmp_path}"), "taxoclass search")
    assert line.startswith("config key 'ray.storage_path': gs://taxoclass-test-bucket/ray "), line
    assert list(tmp_path.iterdir()) == []
