# The two commands: `make run` starts everything on embedded defaults; `make test` runs the
# whole suite (PostgreSQL + Redis). Both set up the virtual environment themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint typecheck install clean bench bench-scale mutation

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py careflow_up

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Benchmarks against a hand-written baseline (bench/README.md). BENCH_ARGS=--quick for a smoke run.
bench: $(STAMP)
	$(PY) bench/request_path.py $(BENCH_ARGS)
	$(PY) bench/e2e.py $(BENCH_ARGS)
	$(PY) bench/burst.py $(BENCH_ARGS)
	$(PY) bench/admin.py $(BENCH_ARGS)
	$(PY) bench/replies.py $(BENCH_ARGS)

# Scale-out (bench/scale.py): 1, 2 and 4 worker groups, and per-sender shaping across them.
# Its own target: make bench already takes most of an hour, and this one compares careflow
# with itself (no baseline), so it is run when sizing, not on every comparison.
bench-scale: $(STAMP)
	$(PY) bench/scale.py $(BENCH_ARGS)

# Mutation testing of the send-safety modules against the fast tests (bench/mutation.py):
# the score per module against its target, and the survivors. MUTATION_ARGS="--changed
# origin/main" runs only the modules a change touches; MUTATION_ARGS=integrations/policy.py one;
# MUTATION_ARGS="--changed-functions origin/main" the functions a change touches, as CI does.
mutation: $(STAMP)
	nice -n 19 $(PY) bench/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) var mutants
