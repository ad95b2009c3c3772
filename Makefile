# The README's two commands. Everything installs into .venv from PyPI (torch from this machine's local CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint clean

demo: setup
	$(BIN)/prunegym demo

test: setup
	$(BIN)/python -m pytest -q

setup: $(VENV)/.installed

# torch is pinned to the CPU build on disk; any range that admits another version pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
