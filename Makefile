# The commands the README names. Each target sets up what it needs first, so one
# command works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data search test lint bench

# The venv is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST comes from Debian's package; installed only when missing, and only
# as root (anyone else gets told the command, or uses --data-dir / NAS_DATA_DIR).
data:
	@if [ ! -f $(FMNIST) ] && [ -z "$$NAS_DATA_DIR" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q dataset-fashion-mnist; \
	  else echo "Fashion-MNIST missing: run 'sudo apt-get install -y dataset-fashion-mnist'"; fi; \
	fi

setup: $(BIN)/.installed data

search: setup
	$(BIN)/python -m nas.search $(ARGS)

test: setup
	$(BIN)/python -m pytest --durations=20 $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/reference.py
