# Two commands a newcomer needs: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# pip finds the CPU wheel of torch through PIP_FIND_LINKS on these machines; elsewhere point
# TORCH_INDEX_URL at PyTorch's CPU wheel index so pip does not pull the CUDA build.
TORCH_INDEX_URL ?=
TORCH_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
STAMP := $(VENV)/.installed
PORT ?= 3000

.PHONY: install demo test dev lint bench eval clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/embeddings-pipeline demo

test: $(STAMP)
	$(BIN)/python -m pytest

dev: $(STAMP)
	$(BIN)/embeddings-pipeline dev --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check embeddings_pipeline embeddings_pipeline_tests bench

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

eval: $(STAMP)
	$(BIN)/embeddings-pipeline eval ../shared/datasets/scifact --tenant scifact

clean:
	-$(BIN)/embeddings-pipeline db stop
	rm -rf .embeddings_pipeline
