r"""Start-up: from `make up` (installed, base model prepared once) to the first token, by phase.

Runs what `make up` runs after its install stamp check (make's own few milliseconds are not
counted), in a temporary data directory whose models/ points at the prepared base model:
`loraplex models pull` where the checkout's Makefile has `up` depend on the `model` target, then
`loraplex up`, and times each phase from the outside:

  model prep      `loraplex models pull`: process start to exit (0 where `make up` does not run
                  it: `loraplex up` checks the model itself, inside "up to vLLM")
  up to vLLM      `loraplex up` process start to the moment it starts vLLM (CLI import, settings,
                  the base-model check)
  vLLM start      vLLM spawned to its /health answering 200 (polled here every 50 ms)
  gateway start   vLLM healthy to the gateway's /readyz answering 200 (what `up` does after
                  vLLM: its own readiness wait, database, demo tenant, app, uvicorn)
  first token     /readyz ok to the first streamed token of the quick tour's request
                  (base model, through the gateway)
  total           model prep start to first token
  first routed    then, the first token of a `"model": "auto"` request (router, embeddings)

The first start in a fresh data directory creates the database, keys and demo tenant; every
later one is a restart, the common case. Repetition 0 is reported as "first start", the p50
over the rest as "restart". vLLM's own log adds its internal phases (API server up, engine
core up, worker up, weights loaded, engine initialised).

Versions side by side: --baseline DIR is another checkout (e.g. `git archive main | tar -x
-C /tmp/base`) whose `serve` runs in turn with this one's, in a rotated order, so all see the same
machine load. The load average is recorded before each start.

    .venv/bin/python bench/startup.py -n 4
    .venv/bin/python bench/startup.py -n 4 --baseline /tmp/base [--baseline /tmp/other ...]

Results: bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:] = (
    [str(BENCH.parent)]
    + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, BENCH.parent)]
    + [str(BENCH)]
)
from common import pct, print_table, write_result  # noqa: E402

REPO = BENCH.parent
MODEL = "SmolLM2-135M-Instruct"
PHASES = ("model prep", "up to vLLM", "vLLM start", "gateway start", "first token", "total")
EXTRA = ("first routed", "stop")
# vLLM's log lines that mark its internal phases (timestamps have 1 s resolution).
VLLM_MARKS = {
    "api server": r"\(APIServer pid=\d+\) INFO",
    "engine core": r"\(EngineCore pid=\d+\) INFO .*Initializing a V1 LLM engine",
    "worker": r"Starting to load model",
    "weights loaded": r"Loading weights took",
    "engine ready": r"init engine .* took",
    "serving": r"Starting vLLM server on",
}
LOGS = BENCH / "results" / "startup-logs"  # vLLM's log of each start, kept for reading
STAMP = re.compile(r" (\d\d-\d\d \d\d:\d\d:\d\d) ")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadavg() -> float:
    """The one-minute load average."""
    return round(os.getloadavg()[0], 2)


class Tree:
    """One checkout of loraplex and the data directory its `up` keeps between repetitions."""

    def __init__(self, label: str, root: Path, model_dir: Path, tmp: Path) -> None:
        self.label = label
        self.root = root
        self.data_dir = tmp / label.replace(" ", "-")
        (self.data_dir / "models").mkdir(parents=True)
        (self.data_dir / "models" / MODEL).symlink_to(model_dir.resolve())
        # What `make up` runs before `loraplex up`: the `model` target if `up` depends on it.
        target = re.search(r"^up:(.*)$", (root / "Makefile").read_text(), re.MULTILINE)
        self.pulls = target is not None and "model" in target.group(1).split()

    def env(self, port: int, vllm_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(self.root),
            LORAPLEX_DATA_DIR=str(self.data_dir),
            LORAPLEX_PORT=str(port),
            LORAPLEX_VLLM_PORT=str(vllm_port),
            HF_HUB_OFFLINE="1",
            ANONYMIZED_TELEMETRY="False",
        )
        return env

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "serve.cli", *args]


def wait_for(url: str, deadline: float, proc: subprocess.Popen[bytes]) -> float:
    """Poll `url` every 50 ms until it answers 200; the time it did."""
    with httpx.Client(timeout=1) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"loraplex up exited with {proc.returncode} while starting")
            try:
                if http.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready in time")


def first_token(gateway: str, key: str, model: str) -> float:
    """Stream one chat completion; the time its first chunk with text arrived."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream(
        "POST", f"{gateway}/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            data = line.removeprefix("data:").strip()
            if not data or data == "[DONE]":
                continue
            choices = json.loads(data).get("choices") or []
            if any((c.get("delta") or {}).get("content") for c in choices):
                return time.monotonic()
    raise RuntimeError("stream ended without a token")


def vllm_marks(log: Path, spawned_at: float) -> dict[str, float]:
    """Seconds from vLLM's spawn to each internal phase its log shows (1 s resolution)."""
    found: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    year = time.localtime(spawned_at).tm_year
    for line in lines:
        for mark, pattern in VLLM_MARKS.items():
            stamp = STAMP.search(line)
            if mark not in found and stamp and re.search(pattern, line):
                when = time.mktime(time.strptime(f"{year}-{stamp.group(1)}", "%Y-%m-%d %H:%M:%S"))
                found[mark] = round(when - spawned_at, 1)
        took = re.search(r"init engine .* took ([\d.]+) s", line)
        if took:
            found["init engine (vLLM's figure)"] = float(took.group(1))
    return found


def one_start(tree: Tree, rep: int, timeout_s: float) -> dict[str, Any]:
    """`models pull` then `up` to the first token, then Ctrl-C; the phases in seconds."""
    port, vllm_port = free_port(), free_port()
    env = tree.env(port, vllm_port)
    load = loadavg()
    t0 = time.monotonic()
    if tree.pulls:
        pull = subprocess.run(
            tree.cli("models", "pull"), env=env, capture_output=True, text=True, cwd=tree.root
        )
        if pull.returncode != 0:
            raise RuntimeError(f"models pull failed: {pull.stderr[-2000:]}")
    t_pull = time.monotonic()
    log = tree.data_dir / "logs" / "vllm.log"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(
        tree.cli("up"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tree.root
    )
    spawned: list[float] = []
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            output.append(line)
            if not spawned and "starting vLLM" in line:
                spawned.extend((time.monotonic(), time.time()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = t_pull + timeout_s
        t_vllm = wait_for(f"http://127.0.0.1:{vllm_port}/health", deadline, proc)
        gateway = f"http://127.0.0.1:{port}"
        t_ready = wait_for(f"{gateway}/readyz", deadline, proc)
        key = (tree.data_dir / "demo_key").read_text().strip()
        t_token = first_token(gateway, key, MODEL)
        t_routed = first_token(gateway, key, "auto")
    except Exception:
        sys.stderr.write("".join(output[-40:]))
        raise
    finally:
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        t_done = time.monotonic()
        reader.join(timeout=5)
    t_spawn, wall_spawn = spawned if spawned else (t_pull, time.time())
    LOGS.mkdir(parents=True, exist_ok=True)
    kept = LOGS / f"{tree.label.replace(' ', '-')}-{rep}.log"
    kept.write_text(log.read_text(errors="replace") if log.is_file() else "")
    return {
        "load_1m": load,
        "model prep": t_pull - t0,
        "up to vLLM": t_spawn - t_pull,
        "vLLM start": t_vllm - t_spawn,
        "gateway start": t_ready - t_vllm,
        "first token": t_token - t_ready,
        "total": t_token - t0,
        "first routed": t_routed - t_token,
        "stop": t_done - t_stop,
        "vllm_log": vllm_marks(log, wall_spawn),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "-n", "--reps", type=int, default=4, help="starts per checkout (first + restarts)"
    )
    ap.add_argument("--model-dir", type=Path, default=REPO / "data" / "models" / MODEL)
    ap.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="another checkout to interleave (repeat for several; labelled by folder name)",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for one start")
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        sys.exit(f"no prepared base model at {args.model_dir}: run `loraplex models pull` first")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="loraplex-startup-") as tmp:
        trees = [
            Tree(f"baseline {b.name}", b.resolve(), args.model_dir, Path(tmp))
            for b in args.baseline
        ]
        trees.append(Tree("this checkout", REPO, args.model_dir, Path(tmp)))
        for rep in range(args.reps):
            # Rotate which checkout goes first, so none always follows the same other one.
            for tree in trees[rep % len(trees) :] + trees[: rep % len(trees)]:
                result = one_start(tree, rep, args.timeout)
                runs.setdefault(tree.label, []).append(result)
                shown = {k: round(v, 2) for k, v in result.items() if isinstance(v, float)}
                print(f"{tree.label} #{rep}: {shown} vLLM log: {result['vllm_log']}", flush=True)
    summary: dict[str, Any] = {}
    for label, results in runs.items():
        restarts = results[1:] or results
        summary[label] = {
            "first start": {k: round(results[0][k], 2) for k in (*PHASES, *EXTRA)},
            "restart p50": {
                k: round(pct([r[k] for r in restarts], 50), 2) for k in (*PHASES, *EXTRA)
            },
            "restarts": len(restarts),
            "load_1m": [r["load_1m"] for r in results],
        }
    columns = [f"{label}, {which}" for label in runs for which in ("first start", "restart p50")]
    rows = [
        [
            phase,
            *(
                f"{summary[label][which][phase]:.2f}"
                for label in runs
                for which in ("first start", "restart p50")
            ),
        ]
        for phase in (*PHASES, *EXTRA)
    ]
    print_table("start-up by phase (seconds)", ["phase", *columns], rows)
    path = write_result(
        "startup",
        {
            "reps": args.reps,
            "baselines": [str(b) for b in args.baseline],
            "summary": summary,
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
