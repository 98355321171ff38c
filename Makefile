# Two set-up-and-go targets (README): `make demo` and `make test`. Each creates .venv with
# Python 3.12 and installs the project (and the example plugin package examples/ks, as a
# user installs a plugin) if that has not been done for these pyproject.toml files.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml examples/ks/pyproject.toml
	@test -x $(PY) || $$(.ci/python312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e examples/ks
	@touch $(STAMP)

# The main job: an OSSE of Lorenz-96 with strong 4DVar, 40 cycles through the Prefect flows
# (embedded server unless PREFECT_API_URL is set) into runs/l96-4dvar/store.zarr, and the report.
demo: $(STAMP)
	$(VENV)/bin/vardax-cycle demo configs/l96-4dvar.yaml --cycles 40

bench: $(STAMP)
	mkdir -p runs
	cd bench && ../$(PY) window.py --write && ../$(PY) cycled.py --write && ../$(PY) tune_b.py --write && ../$(PY) store.py --write && ../$(PY) pipeline.py --write && ../$(PY) scaling.py --write
	@echo "results: bench/RESULTS.md"

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache runs
