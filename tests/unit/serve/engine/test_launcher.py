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
    supervisor = Supervisor(server, said.append, first_backoff_s=0.1, healthy=lambda: True)
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


def _wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


class _Script(VllmServer):
    """A stand-in server: a Python one-liner in its own process group, ready at once."""

    script = ""

    def command(self) -> list[str]:
        import sys

        return [sys.executable, "-c", self.script, str(self.settings.data_dir)]

    def wait_ready(self, timeout_s=None, progress=False) -> None:
        return None


def test_a_dead_servers_leftover_children_are_killed_before_the_restart(tmp_path) -> None:
    """vLLM's API server exits when its engine core dies and leaves the engine's worker spinning
    in its process group: the supervisor kills the group before it starts a new server."""
    from serve.engine.launcher import Supervisor
    from serve.settings import Settings

    class Leaky(_Script):
        # The first run leaves a child behind and exits; later runs stay up.
        script = (
            "import pathlib, subprocess, sys, time; d = pathlib.Path(sys.argv[1]); "
            "first = not (d / 'child').exists(); "
            "c = subprocess.Popen(['sleep', '300']) if first else None; "
            "first and (d / 'child').write_text(str(c.pid)); "
            "time.sleep(0.3 if first else 300)"
        )

    server = Leaky(Settings(data_dir=tmp_path, vllm_port=1), tmp_path, tmp_path / "vllm.log")
    said: list[str] = []
    server.start()
    supervisor = Supervisor(server, said.append, first_backoff_s=0.1, healthy=lambda: True)
    supervisor.start()
    try:
        assert _wait_for(lambda: supervisor.restarts == 1)
        child = int((tmp_path / "child").read_text())
        assert _wait_for(lambda: not _alive(child))
        assert "exited with code 0" in said[0]
    finally:
        supervisor.stop()


def test_a_running_server_that_fails_its_health_checks_is_restarted(tmp_path) -> None:
    from serve.engine.launcher import Supervisor
    from serve.settings import Settings

    class Hung(_Script):
        script = "import time; time.sleep(300)"

    server = Hung(Settings(data_dir=tmp_path, vllm_port=1), tmp_path, tmp_path / "vllm.log")
    server.start()
    first = server.proc
    assert first is not None
    answers = iter([True, False, False, False])  # healthy once, then three failures
    said: list[str] = []
    supervisor = Supervisor(
        server,
        said.append,
        first_backoff_s=0.1,
        unhealthy_after=3,
        healthy=lambda: next(answers, True),
    )
    supervisor.start()
    try:
        assert _wait_for(lambda: supervisor.restarts == 1)
        assert first.poll() is not None  # the hung server was stopped, not left running
        assert server.proc is not None and server.proc.pid != first.pid
        assert "failed 3 health checks in a row" in said[0]
    finally:
        supervisor.stop()
