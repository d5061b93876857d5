# Two commands for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/choicegrad: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(BIN)/choicegrad
	$(BIN)/choicegrad demo

test: $(BIN)/choicegrad
	$(BIN)/python -m pytest

bench: $(BIN)/choicegrad
	$(BIN)/python benchmarks/gradients.py --out docs/gradients-table.md

clean:
	rm -rf $(VENV) build src/*.egg-info
