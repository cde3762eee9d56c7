#!/usr/bin/env bash
# Builds the Binder environment the way repo2docker does, on this machine, and checks it works:
#
#   1. a copy of the tree as a fresh clone has it (tracked and new files, nothing git ignores:
#      no .venv, no node_modules, no prebuilt extension), and a fresh venv (python3 -m venv);
#   2. pip install -r binder/requirements.txt, then binder/postBuild from the copy's root (pip and
#      npm use the registries they are configured with);
#   3. notebooks/quickstart.ipynb run by papermill in that venv's python3 kernel, its results
#      checked;
#   4. `jupyter labextension list` shows qmlops-jupyter installed in the venv, enabled and OK;
#   5. a `jupyter server` started briefly answers GET /qmlops/api/v1/health with ok: true.
#
# Usage: scripts/check-binder.sh [WORK_DIR]
#   WORK_DIR (default: a new folder under /tmp) holds the copy, the venv, the executed notebook
#   and the server's log; it is removed at the end unless KEEP=1 or the check failed.
#   PYTHON picks the interpreter for the venv (default python3; Binder's is 3.11, binder/runtime.txt).
# Needs Python 3.11+, Node.js and npm (for the JupyterLab extension's build), and git.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ -n "${1:-}" ] && [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then
  echo "check-binder: $1 is not empty; name a new folder (it is removed after a successful check)" >&2
  exit 2
fi
WORK="${1:-$(mktemp -d /tmp/qmlops-binder-check.XXXXXX)}"
mkdir -p "${WORK}"
WORK="$(cd "${WORK}" && pwd)"
SRC="${WORK}/repo"
VENV="${WORK}/venv"
STARTED=${SECONDS}
SERVER_PID=""

say() { printf '[check-binder %4ds] %s\n' "$((SECONDS - STARTED))" "$*"; }
fail() {
  say "FAILED: $*" >&2
  say "kept for a look: ${WORK}" >&2
  exit 1
}
cleanup() {
  local status=$?
  if [ -n "${SERVER_PID}" ] && kill -0 "${SERVER_PID}" 2>/dev/null; then
    kill "${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
  fi
  if [ "${status}" -eq 0 ] && [ "${KEEP:-0}" != "1" ]; then
    rm -rf "${WORK}"
  fi
}
trap cleanup EXIT

command -v node >/dev/null || fail "Node.js is needed to build the JupyterLab extension"
command -v git >/dev/null || fail "git is needed to copy the tree as a clone has it"

# Variables of this shell that would point the toolkit elsewhere than Binder's defaults.
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME JUPYTER_PATH JUPYTER_CONFIG_PATH SKIP_JUPYTER_BUILDER
for name in $(compgen -e); do
  case "${name}" in QMLOPS_* | JUPYTERHUB_* | MLFLOW_*) unset "${name}" ;; esac
done

# -- 1. the tree as a clone has it, and a fresh venv ----------------------------------------------
say "copying the tree to ${SRC}"
rm -rf "${SRC}" "${VENV}"
mkdir -p "${SRC}"
(cd "${ROOT}" && git ls-files -z --cached --others --exclude-standard) |
  (cd "${ROOT}" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) |
  tar -C "${SRC}" -xf -
[ -f "${SRC}/binder/postBuild" ] || fail "the copy has no binder/postBuild"
[ ! -e "${SRC}/qmlops_jupyter/labextension" ] || fail "the copy holds a prebuilt extension"

say "creating a venv with $(${PYTHON} --version 2>&1)"
"${PYTHON}" -m venv "${VENV}"
export PATH="${VENV}/bin:${PATH}"
hash -r

# -- 2. what repo2docker runs ----------------------------------------------------------------------
t0=${SECONDS}
say "pip install -r binder/requirements.txt"
(cd "${SRC}" && python -m pip install --no-cache-dir -r binder/requirements.txt \
  >"${WORK}/requirements.log" 2>&1) ||
  { tail -n 40 "${WORK}/requirements.log" >&2; fail "pip install -r binder/requirements.txt"; }
say "  took $((SECONDS - t0)) s"
t0=${SECONDS}
say "binder/postBuild (from the repository's root)"
(cd "${SRC}" && ./binder/postBuild >"${WORK}/postBuild.log" 2>&1) ||
  { tail -n 40 "${WORK}/postBuild.log" >&2; fail "binder/postBuild"; }
say "  took $((SECONDS - t0)) s"

# Everything below runs with Jupyter's and the toolkit's state in the work folder, as in a fresh
# Binder container: nothing of this machine's user folders is read or written.
export JUPYTER_CONFIG_DIR="${WORK}/home/.jupyter"
export JUPYTER_DATA_DIR="${WORK}/home/.local/share/jupyter"
export JUPYTER_RUNTIME_DIR="${WORK}/home/.local/share/jupyter/runtime"
export IPYTHONDIR="${WORK}/home/.ipython"
export QMLOPS_HOME="${WORK}/home/qmlops"
export MLFLOW_DISABLE_TELEMETRY=true
mkdir -p "${JUPYTER_CONFIG_DIR}" "${JUPYTER_DATA_DIR}" "${IPYTHONDIR}"

# -- 3. the quickstart, in the venv's kernel ------------------------------------------------------
t0=${SECONDS}
say "papermill notebooks/quickstart.ipynb"
OUT="${WORK}/quickstart.out.ipynb"
(cd "${SRC}/notebooks" && papermill --kernel python3 --cwd "${SRC}/notebooks" \
  quickstart.ipynb "${OUT}" >"${WORK}/papermill.log" 2>&1) ||
  { tail -n 40 "${WORK}/papermill.log" >&2; fail "the quickstart notebook did not run through"; }
python - "${OUT}" "${VENV}" <<'PY' || fail "the quickstart's results"
import json
import sys

import nbformat

nb = nbformat.read(sys.argv[1], as_version=4)
code = [cell for cell in nb.cells if cell.cell_type == "code"]
last = code[-1]
assert "results" in last.metadata.get("tags", []), "the last code cell is not the results"
text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream")
results = json.loads(text.strip().splitlines()[-1])
assert results["backend"] == "aer", results
bell = results["bell_counts"]
assert sum(bell.values()) == results["shots"] and set(bell) <= {"00", "11"}, bell
assert set(results["ghz_counts"]) <= {"000", "111"}, results["ghz_counts"]
assert results["mlflow_run_id"], results
print(f"quickstart: Bell {bell}, worst correlation error {results['worst_correlation_error']:.3f}")
PY
say "  took $((SECONDS - t0)) s"

# -- 4. the JupyterLab extension, from the venv ---------------------------------------------------
say "jupyter labextension list"
jupyter labextension list >"${WORK}/labextensions.txt" 2>&1 || fail "jupyter labextension list"
python - "${WORK}/labextensions.txt" "${VENV}" <<'PY' || fail "the JupyterLab extension"
import os
import re
import sys

text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())  # jupyter colours it
venv = os.path.realpath(sys.argv[2])
folder = os.path.join(venv, "share", "jupyter", "labextensions")
line = re.search(r"^\s*qmlops-jupyter v\S+ (\S+) (\S+)", text, re.M)
assert line, "qmlops-jupyter is not listed:\n" + text
assert line.group(1) == "enabled" and line.group(2) == "OK", line.group(0)
# Installed (a copy, not a development link) in the venv, where the wheel's shared data goes.
installed = os.path.join(folder, "qmlops-jupyter")
assert os.path.isfile(os.path.join(installed, "package.json")), installed
assert not os.path.islink(installed), f"{installed} is a development link"
print(line.group(0).strip())
PY

# -- 5. the server extension answers -------------------------------------------------------------
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="$(python -c 'import secrets; print(secrets.token_hex(16))')"
ROOT_FLAG=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAG=(--allow-root)
say "jupyter server on 127.0.0.1:${PORT}"
t0=${SECONDS}
(cd "${SRC}" && exec jupyter server --no-browser --ServerApp.ip=127.0.0.1 \
  --ServerApp.port="${PORT}" --ServerApp.port_retries=0 --IdentityProvider.token="${TOKEN}" \
  "${ROOT_FLAG[@]}" >"${WORK}/server.log" 2>&1) &
SERVER_PID=$!
python - "${PORT}" "${TOKEN}" <<'PY' || { tail -n 40 "${WORK}/server.log" >&2; fail "health"; }
import json
import sys
import time
import urllib.error
import urllib.request

port, token = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/qmlops/api/v1/health"
deadline = time.monotonic() + 90
report, status = None, None
while time.monotonic() < deadline:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, report = response.status, json.load(response)
    except urllib.error.HTTPError as exc:  # 503 while the extension starts
        status, report = exc.code, None
    except OSError:
        status = None
    if status == 200 and report and report.get("ok"):
        break
    time.sleep(0.5)
assert status == 200 and report and report["ok"], (status, report)
assert report["engine"]["ok"] and report["ledger"]["ok"], report
print(f"health: ok (ledger {report['ledger']['url']})")
PY
say "  answered after $((SECONDS - t0)) s"
kill "${SERVER_PID}" 2>/dev/null || true
wait "${SERVER_PID}" 2>/dev/null || true
SERVER_PID=""

say "OK: Binder's environment builds and works (total $((SECONDS - STARTED)) s)"
