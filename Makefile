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

# Measurements, not tests: gradient bias/variance table, then tfbind8 fit + generate (~10 minutes).
bench: $(BIN)/choicegrad
	$(BIN)/python benchmarks/gradients.py
	$(BIN)/python benchmarks/tfbind8_generate.py --out runs/bench-tfbind8 --max-minutes 12

clean:
	rm -rf $(VENV) build src/*.egg-info
