# Two set-up-and-go targets (README): `make demo` and `make test`. Each creates .venv with
# Python 3.12 and installs the project if that has not been done for this pyproject.toml.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $$(.ci/python312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job (until the cycling flows land): the benchmarks, written to bench/RESULTS.md.
demo: bench

bench: $(STAMP)
	cd bench && ../$(PY) window.py --write && ../$(PY) cycled.py --write && ../$(PY) tune_b.py --write && ../$(PY) store.py --write
	@echo "results: bench/RESULTS.md"

test: $(STAMP)
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache runs
