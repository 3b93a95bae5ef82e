"""The vLLM launcher leaves no process behind, even after a failed start."""

import os
import subprocess
import time

from serve.engine.launcher import VllmServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purposes
        return fh.read().split()[2] != "Z"


def test_stop_kills_children_of_an_exited_server(tmp_path) -> None:
    # The "server" exits at once and leaves a child in its process group, as vLLM's API server
    # does when it dies while its engine-core process lives on.
    pid_file = tmp_path / "child"
    proc = subprocess.Popen(
        ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; exit 3"], start_new_session=True
    )
    proc.wait(timeout=10)
    child = int(pid_file.read_text())
    assert _alive(child)
    server = VllmServer.__new__(VllmServer)
    server.proc = proc
    server.stop(grace_s=1)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert server.proc is None
