# Two commands for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test fuzz bench online clean

$(BIN)/choicegrad: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

demo: $(BIN)/choicegrad
	$(BIN)/choicegrad demo

# -n 2: one pytest worker per core (pytest-xdist); each test uses one torch thread (tests/conftest.py)
test: $(BIN)/choicegrad
	$(BIN)/python -m pytest -n 2

# The property-based fuzz suite with many random examples (`make test` runs it briefly, with a fixed seed).
# CHOICEGRAD_FUZZ_STATS=FILE also writes how many examples each property ran and how they ended.
fuzz: $(BIN)/choicegrad
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py

# Measurements, not tests (about 2.5 hours on 2 cores, 2026-11-26 and 2026-12-07; the suite alone 71 minutes, 25 on 2026-12-07): the gradient bias/variance table, the standard
# benchmark suite (every peer and pipeline, 6 tasks, 3 seeds) refreshing docs/benchmarks.md, the
# aligner's distance correlations (reusing the suite's scorers) refreshing docs/aligner.md, then the
# default `choicegrad fit` + `generate` on tfbind8 (timed), greedy generation throughput, then quality
# against inference budget on unseen contexts (bench-budgets, its own section of docs/benchmarks.md, 35
# minutes) and generation speed for 20,000 unseen contexts with `choicegrad fit` timed on a 40,000-row log,
# then portfolio, slices and min-distance decoding against polish on tfbind8 and gb1 with 5-member ensembles
# (25 minutes) and with the suite's single scorer (min-distance; 15 minutes), then the
# scorer's ceiling on tfbind8 per TF against a one-hot MLP reference and with the upper-tail settings, and
# the suite's tfbind8 and gb1 again with those settings (about 20 minutes).
bench: $(BIN)/choicegrad
	$(BIN)/python benchmarks/gradients.py
	$(BIN)/choicegrad bench --out runs/bench --docs docs/benchmarks.md
	$(BIN)/python benchmarks/aligner_distance.py --cache runs/bench/scorers --out docs/aligner.md
	mkdir -p runs/bench-tfbind8
	$(BIN)/python benchmarks/tfbind8_generate.py --out runs/bench-tfbind8 --max-minutes 12 | tee runs/bench-tfbind8/log.txt
	$(BIN)/python benchmarks/greedy_speed.py | tee runs/greedy_speed.json
	$(BIN)/choicegrad bench-budgets --out runs/budgets --jobs 2 --docs docs/benchmarks.md
	$(BIN)/python benchmarks/unseen_speed.py --refit | tee runs/unseen_speed.json
	mkdir -p runs/portfolio
	$(BIN)/python benchmarks/portfolio.py --out runs/portfolio | tee runs/portfolio/log.txt
	mkdir -p runs/spread
	$(BIN)/python benchmarks/portfolio.py --members 1 --out runs/spread | tee runs/spread/log.txt
	$(BIN)/python benchmarks/tfbind8_scorers.py --out runs/tfbind8-scorers.json | tee runs/tfbind8-scorers.txt
	$(BIN)/python benchmarks/tfbind8_scorers.py --scorers choicegrad --fit '{"keep": "last", "epochs": 20, "model": {"activation": "relu"}}' --out runs/tfbind8-scorers-tail.json | tee runs/tfbind8-scorers-tail.txt
	$(BIN)/python benchmarks/upper_tail.py --out runs/upper-tail | tee runs/upper-tail.txt

# Design rounds against the ground truth (about 70 minutes on 2 cores): designer, genetic algorithm, random
# rows and the offline pipeline on tfbind8, gb1, ehrlich, nk3 and holo-bench's Ehrlich function
# (pytorch-holo, installed without its dependencies: only its torch-only elemental files are used), 3
# seeds, and a more diverse designer (--min-distance 3) on tfbind8; refreshes docs/online.md, then times
# one `propose` round on a 50,000-row table of 32 slots x 32 categories (6 minutes).
online: $(BIN)/choicegrad
	$(BIN)/pip install -q -c constraints.txt --no-deps pytorch-holo==0.0.5
	$(BIN)/choicegrad bench-online --out runs/online
	$(BIN)/choicegrad bench-online --tasks holo-ehrlich --out runs/online --append
	$(BIN)/python benchmarks/propose_speed.py | tee runs/online/propose_speed.json
	$(BIN)/choicegrad bench-online --tasks tfbind8 --methods designer:min_distance=3 --out runs/online --append --docs docs/online.md

clean:
	rm -rf $(VENV) build src/*.egg-info
