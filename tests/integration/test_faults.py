"""Faults with real processes: kill -9 at the worst moments, and what is left must be sound.

- `loraplex adapters register` killed at each step (mid-copy, staged, stored but not recorded,
  recorded): never a listed version without its files; the leftovers go with
  `loraplex adapters gc` or the next registration.
- `RetrievalService` ingest killed in the middle of a file: Chroma and the BM25 index agree
  afterwards, and ingesting the same file again completes the job.
- `loraplex up` with its own data dir and ports: its vLLM engine killed in the middle of a
  stream; the client gets an OpenAI-style error event and a clean end, other requests a 503 with
  Retry-After, /readyz says so; the supervisor says why, restarts vLLM, and adapters are
  served again. One extra vLLM (plus its one restart) for the whole module.

A process is stopped at an exact step by a small launcher that wraps the real CLI code (SIGSTOP
from inside, once the step is done), checked in that state, then killed with SIGKILL: no
fault-injection switch in the product, and no race with a polling loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = "SmolLM2-135M-Instruct"

# The launcher: patches one step of the real code to stop the process right after (or before)
# it, then runs the real `loraplex` CLI (argv[2:]) or an ingest (argv[2] == "ingest").
LAUNCHER = r"""
import os, signal, sys

def stop():
    os.kill(os.getpid(), signal.SIGSTOP)

point = sys.argv[1]
import adapters.store as store
import adapters.registry as registry

if point == "mid-copy":
    copy = store._copy_file
    def copy_then_stop(src, dst):
        copy(src, dst)
        if dst.name == "adapter_config.json":
            stop()
    store._copy_file = copy_then_stop
elif point == "staged":
    commit = store.ArtifactStore.commit
    def stop_then_commit(self, staging, digest):
        stop()
        return commit(self, staging, digest)
    store.ArtifactStore.commit = stop_then_commit
elif point == "stored":
    commit = store.ArtifactStore.commit
    def commit_then_stop(self, staging, digest):
        out = commit(self, staging, digest)
        stop()
        return out
    store.ArtifactStore.commit = commit_then_stop
elif point == "recorded":
    register = registry.AdapterRegistry.register
    def register_then_stop(self, *args, **kwargs):
        out = register(self, *args, **kwargs)
        stop()
        return out
    registry.AdapterRegistry.register = register_then_stop

if sys.argv[2] == "ingest":
    from pathlib import Path
    from retrieval.embeddings import SentenceTransformerEmbedder
    from retrieval.service import RetrievalService

    class StopAfter:
        # Stops the process once `n` batches were embedded (and so written to Chroma).
        def __init__(self, inner, n):
            self.inner, self.n, self.name, self.calls = inner, n, inner.name, 0
        @property
        def dim(self):
            return self.inner.dim
        def embed(self, texts):
            if self.calls == self.n:
                stop()
            self.calls += 1
            return self.inner.embed(texts)

    data, tenant, path = Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    embedder = SentenceTransformerEmbedder()
    if point == "batches":
        embedder = StopAfter(embedder, int(sys.argv[6]))
    service = RetrievalService(bm25_dir=data / "bm25", chroma_path=data / "chroma", embedder=embedder)
    print(service.ingest_paths(tenant, [path]).to_dict(), flush=True)
else:
    from serve.cli import app
    sys.argv = ["loraplex", *sys.argv[2:]]
    app()
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLEX_")}
    env.update(
        PYTHONPATH=str(REPO),
        LORAPLEX_DATA_DIR=str(data_dir),
        LORAPLEX_ADMIN_KEY="lpx-admin-faults-test-key",
        LORAPLEX_DEMO_TENANT="",
        HF_HUB_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def stopped_at(point: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run the launcher until it stops itself at `point`; the stopped process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, point, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while _state(proc.pid) != "T":
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            raise AssertionError(f"never stopped at {point} (exit {proc.returncode}):\n{out}")
        time.sleep(0.05)
    return proc


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- registration ---------------------------------------------------------------------------


def small_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter for the real base model's shapes, on 2 of its layers (made in ms)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = BASE
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory) -> Path:
    return small_adapter(model_dir, tmp_path_factory.mktemp("faults-adapter") / "a", seed=7)


def _services(data_dir: Path, model_dir: Path):
    from serve.services import Services
    from serve.settings import Settings

    settings = Settings(
        data_dir=data_dir, model_dir=model_dir, admin_key="lpx-admin-faults-test-key"
    )
    return Services(settings)


def _registry(data_dir: Path, model_dir: Path):
    return _services(data_dir, model_dir).registry


def _sound(data_dir: Path, model_dir: Path) -> list[Any]:
    """Every listed version has its files, with the digest it was listed with."""
    import hashlib

    versions = _registry(data_dir, model_dir).versions()
    for av in versions:
        weights = av.path / "adapter_model.safetensors"
        assert (av.path / "adapter_config.json").is_file() and weights.is_file(), av.ref
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == av.digest
    return versions


def _store(data_dir: Path) -> tuple[set[str], set[str]]:
    root = data_dir / "adapters"
    return {p.name for p in (root / "staging").iterdir()}, {
        p.name for p in (root / "sha256").iterdir()
    }


# What the store and the registry hold when the process is stopped at each step.
EXPECTED = {
    "mid-copy": dict(staging=1, stored=0, listed=0),
    "staged": dict(staging=1, stored=0, listed=0),
    "stored": dict(staging=0, stored=1, listed=0),
    "recorded": dict(staging=0, stored=1, listed=1),
}


@pytest.mark.parametrize("point", list(EXPECTED))
def test_register_killed_at_each_step_leaves_no_listed_version_without_files(
    point, adapter_dir, model_dir, tmp_path
) -> None:
    env = _env(tmp_path, LORAPLEX_MODEL_DIR=str(model_dir), LORAPLEX_PORT="9")  # no gateway there
    _services(tmp_path, model_dir).tenants.create("acme")
    register = ["adapters", "register", str(adapter_dir), "--name", "colours", "--tenant", "acme"]
    proc = stopped_at(point, register, env)
    staging, stored = _store(tmp_path)
    listed = _registry(tmp_path, model_dir).versions()
    assert (len(staging), len(stored), len(listed)) == tuple(EXPECTED[point].values()), point
    kill9(proc)

    versions = _sound(tmp_path, model_dir)
    assert len(versions) == EXPECTED[point]["listed"]

    # `adapters gc` removes exactly the leftovers; nothing a listed version needs.
    gc = cli(["adapters", "gc", "--min-age", "0"], env)
    assert gc.returncode == 0, gc.stderr
    staging, stored = _store(tmp_path)
    assert staging == set() and stored == {v.digest for v in versions}
    removed = gc.stdout.count("removed")
    assert (
        removed
        == EXPECTED[point]["staging"] + EXPECTED[point]["stored"] - EXPECTED[point]["listed"]
    )

    # The registration, run again, completes the job.
    again = cli(register, env)
    assert again.returncode == 0, again.stderr
    assert (
        "already registered as colours@1" if point == "recorded" else "registered colours@1"
    ) in again.stdout
    (version,) = _sound(tmp_path, model_dir)
    assert version.ref == "colours@1" and version.is_prod


def test_the_next_registration_collects_old_leftovers_and_adopts_stored_bytes(
    adapter_dir, model_dir, tmp_path
) -> None:
    env = _env(tmp_path, LORAPLEX_MODEL_DIR=str(model_dir), LORAPLEX_PORT="9")
    _services(tmp_path, model_dir).tenants.create("acme")
    register = ["adapters", "register", str(adapter_dir), "--name", "colours", "--tenant", "acme"]
    kill9(stopped_at("staged", register, env))
    kill9(stopped_at("stored", register, env))
    (staged,), (digest,) = _store(tmp_path)
    # An hour later: the staged copy is old enough to be nobody's.
    past = time.time() - 7200
    os.utime(tmp_path / "adapters" / "staging" / staged, (past, past))
    done = cli(register, env)
    assert done.returncode == 0 and "registered colours@1" in done.stdout, done.stderr
    assert _store(tmp_path) == (set(), {digest})  # the stored bytes were adopted, not copied again
    _sound(tmp_path, model_dir)


# -- ingest ---------------------------------------------------------------------------------

GROUP = 40  # records a group; a search returns at most 50 hits


def _records(path: Path, count: int, first: int = 0) -> Path:
    """A JSONL file of short records, each with its own token and a group to filter by."""
    lines = [
        json.dumps(
            {
                "id": f"w{i}",
                "text": f"The widget W{i:04d} has serial code ZX{i:04d}Q. Token tok{i:04d}.",
                "group": i // GROUP,
            }
        )
        for i in range(first, first + count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _views(service: Any, tenant: str, groups: list[int]) -> tuple[set[str], set[str]]:
    """The chunk ids Chroma holds (dense search, group by group) and those the BM25 index finds
    (a query of every token of the group)."""
    dense: set[str] = set()
    lexical: set[str] = set()
    for g in groups:
        where = {"group": g}
        tokens = " ".join(f"tok{i:04d}" for i in range(g * GROUP, (g + 1) * GROUP))
        dense |= {h.id for h in service.search(tenant, "widget", 50, where, mode="dense").hits}
        lexical |= {h.id for h in service.search(tenant, tokens, 50, where, mode="bm25").hits}
    return dense, lexical


@pytest.mark.xfail(
    strict=True,
    reason="retrieval: after a kill between Chroma's upsert and the version bump, the BM25 index "
    "keeps its (equal) version and misses the chunks Chroma holds; remove this mark with the fix",
)
def test_ingest_killed_mid_file_leaves_both_indexes_agreeing_and_reingest_completes(
    tmp_path,
) -> None:
    """A tenant with documents ingests a file of 600 records (two batches); the process is
    killed after the first batch reached Chroma, before the ingest finished."""
    from retrieval.embeddings import SentenceTransformerEmbedder
    from retrieval.service import RetrievalService

    data, env = tmp_path / "data", _env(tmp_path)
    earlier = _records(tmp_path / "earlier.jsonl", 2 * GROUP, first=1000)
    big = _records(tmp_path / "widgets.jsonl", 600)
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "none", "ingest", str(data), "acme", str(earlier)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    kill9(stopped_at("batches", ["ingest", str(data), "acme", str(big), "1"], env))

    service = RetrievalService(
        bm25_dir=data / "bm25", chroma_path=data / "chroma", embedder=SentenceTransformerEmbedder()
    )
    groups = [*range(600 // GROUP), 1000 // GROUP, 1000 // GROUP + 1]
    failures = []
    dense, lexical = _views(service, "acme", groups)
    if dense != lexical:
        failures.append(
            f"after the kill, Chroma holds {len(dense)} chunks and BM25 finds {len(lexical)} "
            f"({len(dense - lexical)} only in Chroma, {len(lexical - dense)} only in BM25)"
        )
    report = service.ingest_paths("acme", [big]).to_dict()
    dense, lexical = _views(service, "acme", groups)
    if len(dense) != 600 + 2 * GROUP or dense != lexical:
        failures.append(
            f"after ingesting the file again ({report}): Chroma holds {len(dense)} chunks, "
            f"BM25 finds {len(lexical)}; {600 + 2 * GROUP} expected"
        )
    assert not failures, "; ".join(failures)


# -- `loraplex up`: vLLM killed mid-stream, supervised back --------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("gone", "Z")


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


class Up:
    """A `loraplex up` in a subprocess with its own data dir and ports."""

    def __init__(self, data_dir: Path, model_dir: Path, port: int, vllm_port: int) -> None:
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir / "up.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = _env(
            data_dir,
            LORAPLEX_MODEL_DIR=str(model_dir),
            LORAPLEX_PORT=str(port),
            LORAPLEX_VLLM_PORT=str(vllm_port),
            LORAPLEX_DEMO_TENANT="demo",
        )
        self.admin = env["LORAPLEX_ADMIN_KEY"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "serve.cli", "up"], env=env, stdout=out, stderr=out
            )
        self.groups: set[int] = set()
        self.key = ""  # the demo tenant's, once ready

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def vllm_pids(self) -> tuple[int, list[int]]:
        """The vLLM API server `up` started, and its engine processes."""
        servers = [p for p in _children(self.proc.pid) if _alive(p)]
        assert len(servers) == 1, servers
        server = servers[0]
        self.groups.add(os.getpgid(server))
        return server, _children(server)

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for group in self.groups:  # whatever vLLM left if `up` could not stop it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def up(model_dir, tmp_path_factory):
    """`loraplex up` running, ready, with an adapter registered and served."""
    import httpx

    stack = Up(tmp_path_factory.mktemp("up-data"), model_dir, _free_port(), _free_port())
    try:
        _wait(lambda: stack.ready() or stack.proc.poll() is not None, 900, "`loraplex up`")
        assert stack.proc.poll() is None, stack.text()
        stack.vllm_pids()  # notes vLLM's process group, for the clean-up
        stack.key = (stack.data_dir / "demo_key").read_text().strip()
        adapter = small_adapter(model_dir, stack.data_dir / "colours", seed=3)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for file in adapter.iterdir():
                zf.write(file, f"adapter/{file.name}")
        resp = httpx.post(
            f"{stack.url}/v1/adapters",
            headers={"Authorization": f"Bearer {stack.admin}"},
            files={"file": ("a.zip", archive.getvalue(), "application/zip")},
            data={"name": "colours", "tenant": "demo"},
            timeout=300,
        )
        assert resp.status_code == 201, resp.text
        yield stack
    finally:
        stack.stop()


def _chat(stack: Up, model: str, **extra: Any) -> Any:
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 8, "temperature": 0, **extra}  # fmt: skip
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {stack.key}"},
        timeout=300,
    )


def test_vllm_killed_mid_stream_then_supervised_back(up) -> None:
    import httpx

    assert _chat(up, "colours").status_code == 200  # the adapter is served before the kill
    server, engines = up.vllm_pids()
    engine = [p for p in engines if _comm(p).startswith("VLLM::EngineCor")]
    assert engine, [(p, _comm(p)) for p in engines]
    leftovers = [p for e in engine for p in _children(e)] + engines  # the engine's workers too

    events: list[str] = []
    body = {"model": BASE, "stream": True, "max_tokens": 1500, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell a very long story about a dragon."}]}  # fmt: skip
    with httpx.stream(
        "POST",
        f"{up.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {up.key}"},
        timeout=300,
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                if len(events) == 3:
                    os.kill(engine[0], signal.SIGKILL)  # the engine dies mid-answer
    assert len(events) >= 5, events
    assert events[-1] == "[DONE]"  # a clean end of stream, not a cut connection
    error = json.loads(events[-2])["error"]
    assert error["code"] == "engine_unavailable" and error["type"] == "service_unavailable_error"
    assert "middle of the answer" in error["message"]
    assert all("choices" in json.loads(e) for e in events[:-2])

    # While vLLM is down: not ready, and a plain request is a 503 the caller can retry.
    _wait(lambda: not up.ready(), 60, "/readyz to say not ready")
    down = _chat(up, BASE)
    assert down.status_code == 503 and down.headers["retry-after"].isdigit(), down.text
    assert down.json()["error"]["code"] == "engine_unavailable"

    # The supervisor says why, kills what the dead server left, and brings vLLM back.
    _wait(lambda: "vLLM is back" in up.text(), 900, "the supervisor to restart vLLM")
    log = up.text()
    assert "vLLM exited with code" in log and "restarting in" in log, log[-3000:]
    assert not any(_alive(p) for p in [server, *leftovers])
    _wait(up.ready, 60, "/readyz to say ready again")
    again = _chat(up, "colours")  # vLLM forgot the adapter: it is loaded again on demand
    assert again.status_code == 200, again.text
    assert again.json()["model"] == "colours" and again.headers["x-loraplex-adapter"] == "colours@1"
    streamed = _chat(up, BASE, stream=True)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
