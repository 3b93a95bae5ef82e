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


def test_the_supervisor_restarts_a_server_that_dies_and_says_why(tmp_path) -> None:
    """`loraplex up` keeps vLLM running: a death is logged with the log's tail, then a restart."""
    import sys

    from serve.engine.launcher import Supervisor
    from serve.settings import Settings

    runs = tmp_path / "runs"

    class Flaky(VllmServer):
        def command(self) -> list[str]:
            # The first run dies after printing; later runs stay up.
            script = (
                "import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); n = len(p.read_text()) "
                "if p.exists() else 0; p.write_text('x' * (n + 1)); print('run', n + 1, flush=True); "
                "time.sleep(0.5 if n == 0 else 300); sys.exit(7)"
            )
            return [sys.executable, "-c", script, str(runs)]

        def wait_ready(self, timeout_s=None, progress=False) -> None:
            return None

    settings = Settings(data_dir=tmp_path, vllm_port=1)
    server = Flaky(settings, tmp_path, tmp_path / "logs" / "vllm.log")
    said: list[str] = []
    server.start()
    supervisor = Supervisor(server, said.append, first_backoff_s=0.1)
    supervisor.start()
    deadline = time.monotonic() + 20
    log = tmp_path / "logs" / "vllm.log"
    while "run 2" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert supervisor.restarts == 1 and runs.read_text() == "xx"
        assert "exited with code 7" in said[0] and "run 1" in said[0]
        assert "vLLM is back" in said[-1]
        assert server.exited() is None  # the second run is up
    finally:
        supervisor.stop()
    assert server.proc is None
