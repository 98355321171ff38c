# Two set-up-and-go targets (README): `make demo` and `make test`. Each creates .venv with
# Python 3.12 and installs exactly the versions in uv.lock (the project with its dev extra,
# and the example plugin package examples/ks, as a user installs a plugin) if that has not
# been done for this lock. uv comes from the package index into .venv (it is a wheel).
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test bench lint lock clean

$(UV):
	@test -x $(PY) || $$(.ci/python312) -m venv $(VENV)
	$(PY) -m pip install -q uv

$(STAMP): pyproject.toml uv.lock examples/ks/pyproject.toml | $(UV)
	$(UV) sync -q --frozen --inexact --extra dev --python $(PY)
	$(UV) pip install -q --python $(PY) --no-deps -e examples/ks
	@touch $(STAMP)

# After changing pyproject.toml's dependencies: resolve them anew into uv.lock.
lock: | $(UV)
	$(UV) lock --python $(PY)

# The main job: an OSSE of Lorenz-96 with strong 4DVar, 40 cycles through the Prefect flows
# (embedded server unless PREFECT_API_URL is set) into runs/l96-4dvar/store.zarr, and the report.
demo: $(STAMP)
	$(VENV)/bin/vardax-cycle demo configs/l96-4dvar.yaml --cycles 40

bench: $(STAMP)
	mkdir -p runs
	cd bench && ../$(PY) window.py --write && ../$(PY) cycled.py --write && ../$(PY) tune_b.py --write && ../$(PY) store.py --write && ../$(PY) pipeline.py --write && ../$(PY) scaling.py --write
	@echo "results: bench/RESULTS.md"

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache runs

# The root prefect.yaml (`prefect deploy`) from the shipped configs; a test keeps it current.
prefect.yaml: $(STAMP) flows/_operations.py $(wildcard configs/*.yaml)
	$(PY) -m flows._operations $(sort $(wildcard configs/*.yaml)) > $@
