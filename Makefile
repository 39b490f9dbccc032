# sweeplab — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install sweeplab with its dev tools (once)

train: $(STAMP) ## Train and evaluate the embedded default (digits, small CNN, CPU); ARGS=overrides
	$(BIN)/sweeplab train $(ARGS)

test: $(STAMP) ## Run the test suite on every core; ARGS="-n0 tests/test_x.py" for one process
	$(BIN)/python -m pytest -n auto --dist loadfile $(ARGS)

lint: $(STAMP) ## Check style and formatting with ruff
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/ruff format --check src tests benchmarks notebooks

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks notebooks
	$(BIN)/ruff format src tests benchmarks notebooks

dashboard: $(STAMP) ## Open the local dashboard on http://127.0.0.1:8501; ARGS=--port N --runs-dir DIR
	$(BIN)/sweeplab dashboard $(ARGS)

sync: $(STAMP) ## Upload the store's offline W&B runs (needs WANDB_API_KEY or `wandb login`)
	$(BIN)/sweeplab sync $(ARGS)

bench: $(STAMP) ## Run the overhead benchmark (sweeplab vs a plain PyTorch loop)
	$(BIN)/python benchmarks/overhead.py $(ARGS)

clean: ## Remove caches and build files (keeps .venv, runs/ and data/)
	rm -rf build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

.PHONY: help install train test lint format bench clean dashboard sync
