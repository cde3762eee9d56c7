# Two commands on a fresh clone: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qmlops-installed
# jupyter refuses to start as root without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888

.PHONY: venv labextension run hub hub-proxy test test-js bench lint format lock clean

# The package is installed editable without its JupyterLab extension build hook: the extension is
# built below with the venv's jlpm and linked into the venv (what `labextension develop` does).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	SKIP_JUPYTER_BUILDER=1 $(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements.lock -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# The JupyterLab extension (labextension/, TypeScript): jlpm is JupyterLab's yarn; packages come
# from the registry npm is configured with (read here, never written into the repo).
LABEXT_DIR    := labextension
LABEXT_OUT    := qmlops_jupyter/labextension
LABEXT_BUILT  := $(LABEXT_OUT)/static/style.js
LABEXT_DEPS   := $(LABEXT_DIR)/node_modules/.yarn-state.yml
LABEXT_LINK   := $(VENV)/share/jupyter/labextensions/qmlops-jupyter
LABEXT_SRC    := $(wildcard $(LABEXT_DIR)/src/*.ts $(LABEXT_DIR)/src/*.tsx $(LABEXT_DIR)/style/* \
                   $(LABEXT_DIR)/schema/*) $(LABEXT_DIR)/package.json $(LABEXT_DIR)/tsconfig.json
JLPM = cd $(LABEXT_DIR) && PATH="$(abspath $(BIN)):$$PATH" \
	YARN_NPM_REGISTRY_SERVER="$$(npm config get registry 2>/dev/null | sed -e 's,/$$,,')" \
	YARN_ENABLE_TELEMETRY=0 jlpm

$(LABEXT_DEPS): $(LABEXT_DIR)/package.json $(LABEXT_DIR)/yarn.lock | $(STAMP)
	@command -v node >/dev/null || { echo "the JupyterLab extension needs Node.js (apt-get install nodejs)" >&2; exit 1; }
	$(JLPM) install --immutable
	@touch $@

$(LABEXT_BUILT): $(LABEXT_SRC) $(LABEXT_DEPS)
	$(JLPM) build:prod
	@touch $@

labextension: $(LABEXT_BUILT)
	@if [ "$$(readlink $(LABEXT_LINK))" != "$(abspath $(LABEXT_OUT))" ]; then \
		rm -rf $(LABEXT_LINK); mkdir -p $(dir $(LABEXT_LINK)); \
		ln -s $(abspath $(LABEXT_OUT)) $(LABEXT_LINK); fi

# JupyterLab on 127.0.0.1 with the toolkit on its embedded defaults (Aer, a SQLite ledger and a
# local MLflow store under QMLOPS_HOME). The server extension hosts the engine in JupyterLab's
# own process, so jobs submitted without waiting run while JupyterLab does.
run: venv labextension
	@$(BIN)/qmlops backends
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser $(ROOT_FLAG)

# A team's deployment on this machine (jupyterhub/jupyterhub_config.py, docs/hub.md): the hub,
# its proxy (configurable-http-proxy from the registry npm is configured with), the `qmlops`
# service on a PostgreSQL ledger (QMLOPS_DATABASE_URL; the databases are made when missing), the
# MLflow service and the idle culler, all on 127.0.0.1. Admins: QMLOPS_HUB_ADMINS (default admin).
HUB_PROXY := jupyterhub/node_modules/.bin/configurable-http-proxy

$(HUB_PROXY): jupyterhub/package.json jupyterhub/package-lock.json
	cd jupyterhub && npm ci --no-audit --no-fund
	@touch $@

hub-proxy: $(HUB_PROXY)

hub: venv labextension $(HUB_PROXY)
	cd jupyterhub && QMLOPS_HUB_CREATE_DATABASES=1 $(abspath $(BIN))/jupyterhub -f jupyterhub_config.py

# Programs the tests run for real (Prometheus, Node.js, Chromium) come from Debian's packages
# when missing. The extension's jest tests run first, then every Python test (the browser tests
# drive the built extension in headless Chromium).
test: venv
	@scripts/system-packages.sh
	@$(MAKE) --no-print-directory labextension hub-proxy
	$(JLPM) test --ci
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-js: venv labextension
	$(JLPM) test --ci

bench: venv
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lint: venv labextension
	$(BIN)/ruff check .
	$(BIN)/ruff format --check qmlops_jupyter tests benchmarks
	$(JLPM) lint:check

format: venv labextension
	$(BIN)/ruff format qmlops_jupyter tests benchmarks
	$(BIN)/ruff check --fix .
	$(JLPM) lint

# Re-pin after changing dependencies: what a fresh machine installs is what was tested.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check \
		| grep -v '^qmlops' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis $(LABEXT_OUT) \
		$(LABEXT_DIR)/node_modules $(LABEXT_DIR)/lib $(LABEXT_DIR)/tsconfig.tsbuildinfo
