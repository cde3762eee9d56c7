# Two commands on a fresh clone: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qmlops-installed
# jupyter refuses to start as root without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888

.PHONY: venv run test bench lint format lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements.lock -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# JupyterLab on 127.0.0.1 with the toolkit on its embedded defaults (Aer, a SQLite ledger and a
# local MLflow store under QMLOPS_HOME). The server extension hosts the engine in JupyterLab's
# own process, so jobs submitted without waiting run while JupyterLab does.
run: venv
	@$(BIN)/qmlops backends
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser $(ROOT_FLAG)

# Programs the tests run for real (Prometheus) come from Debian's packages when missing.
test: venv
	@scripts/system-packages.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check qmlops_jupyter tests benchmarks

format: venv
	$(BIN)/ruff format qmlops_jupyter tests benchmarks
	$(BIN)/ruff check --fix .

# Re-pin after changing dependencies: what a fresh machine installs is what was tested.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check \
		| grep -v '^qmlops' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
