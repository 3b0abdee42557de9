# Two commands do all the set-up on a fresh machine: `make experiments` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: experiments test gate flakes lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## Run the standard suite (chaoskit/suite) and this repository's experiments/ on the
## reference stack, embedded default backend; writes reports/.
experiments: $(STAMP)
	$(PY) -m pytest chaoskit/suite experiments $(PYTEST_ARGS)

## Run the whole test suite.
test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

## Fail (exit 1) when the latest run breached these budgets; for CI pipelines.
gate: $(STAMP)
	$(VENV)/bin/chaoskit gate reports/latest --ttd 2s --rto 30s --rpo 5m

## Run `make experiments` RUNS times (default 10; BACKEND=docker for Docker) and print
## each experiment's pass count; exit 1 if any run failed.
flakes: $(STAMP)
	$(PY) bench/flakes.py --runs $(or $(RUNS),10) --backend $(or $(BACKEND),process)

lint: $(STAMP)
	$(VENV)/bin/ruff check chaoskit tests experiments bench
	$(VENV)/bin/mypy chaoskit

clean:
	rm -rf $(VENV) reports/*/ reports/latest
