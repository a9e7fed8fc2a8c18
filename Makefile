# stepvit: `make demo` runs the whole chain, `make test` the test suite.
# Both set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_TOOLS := $(shell command -v iverilog >/dev/null 2>&1 && command -v yosys >/dev/null 2>&1 \
                && command -v tclsh >/dev/null 2>&1 && [ -f /usr/include/lz4.h ] || echo missing)
FASHION_MNIST := $(shell [ -d /usr/share/datasets/fashion-mnist ] || echo missing)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install tools data demo test test-fast test-slow test-recipe mutants docs bench lint clean

install: $(STAMP) tools data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# The CPU build of torch: a looser spec pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-build-isolation -e '.[model,hw,board,dev]'
	touch $(STAMP)

tools:
ifeq ($(APT_TOOLS),missing)
	# Icarus Verilog (simulation), Yosys (resource reports), tclsh (the overlay Tcl's
	# tests, which fail without it) and lz4's headers (Verilator's FST traces) from Debian.
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog yosys tcl liblz4-dev
endif

data:
ifeq ($(FASHION_MNIST),missing)
	# Fashion-MNIST's four IDX files, to /usr/share/datasets/fashion-mnist/ (30 MB).
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
endif

demo: install
	$(BIN)/stepvit demo

# Every test but the whole-recipe trainings (CI runs this), one worker per core, a test
# file to a worker (its module fixtures built once), the longest files first
# (tests/conftest.py): 12-22 minutes on these 2-core machines, which vary, over the 15 it
# should take (docs/results/2026-12-06-test-time.md); each test is cut at 300 s.
XDIST := -n auto --dist loadfile --no-loadscope-reorder
test: install
	$(BIN)/python -m pytest -q $(XDIST) -m 'not recipe'

# The quick tier while editing: the tests not marked slow.
test-fast: install
	$(BIN)/python -m pytest -q $(XDIST) -m 'not slow and not recipe'

test-slow: install
	$(BIN)/python -m pytest -q $(XDIST) -m 'slow and not recipe'

# The shipped digits recipe trained whole and held to its seed-spread bounds: a benchmark
# (4-5 minutes of training on one core), not part of CI.
test-recipe: install
	$(BIN)/python -m pytest -q -m recipe

# The curated mutation list (tests/mutation/mutants.yaml): every planted bug must be caught.
mutants: install
	$(BIN)/python tests/mutation/run.py

# The mutant table of docs/testing.md, written from tests/mutation/mutants.yaml.
docs: $(STAMP)
	$(BIN)/python tests/mutation/run.py --table

bench: install
	$(BIN)/stepvit demo --bench-only

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf build runs .pytest_cache sim_build
