"""Schemathesis against a real ``jupyter server`` process: every operation of the served
OpenAPI document, with generated valid and invalid requests (and the stateful sequences its
links describe), must never answer 5xx and must answer what the document says.

One adjustment, about what a schema cannot say: schema-valid data may still be refused with
400/404/409/422/503 (OpenQASM text that does not parse, a backend or credential that does not
exist, a budget already spent). A generated ``?wait=S`` ends as soon as its job is finished (the
server's engine runs the example Bell jobs in well under a second) or at once with 404 for a
made-up id; the request timeout bounds it anyway. ``GET /events?wait=S`` waits the whole S
seconds (up to 30) whenever nothing changes past a generated ``after``, so its ``wait`` is fixed
at 0.1 s (its bounds are checked in test_server_api.py).

Providers are kept offline: the server's HTTP(S) proxy is a closed local port, so testing a
generated credential fails at once instead of reaching IBM, AWS or IonQ.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qmlops_testing import free_port

API = "qmlops/api/v1"
SPEC_FILE = Path(__file__).resolve().parent.parent / "qmlops_jupyter" / "server" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "503"]

[[operations]]
include-path = "/events"
parameters = { "query.wait" = "0.1" }
"""


class Server:
    def __init__(self, url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.token = token
        self.process = process
        self.log = log

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port, token = free_port(), secrets.token_hex(16)
    root = tmp_path / "root"
    root.mkdir()
    closed = free_port()
    env = {
        **os.environ,
        "QMLOPS_HOME": str(tmp_path / "qmlops"),
        "QMLOPS_TRACKING": "off",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "HTTP_PROXY": f"http://127.0.0.1:{closed}",
        "HTTPS_PROXY": f"http://127.0.0.1:{closed}",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for var in (
        "QMLOPS_DATABASE_URL",
        "QMLOPS_BACKENDS_FILE",
        "QMLOPS_CONFIG_FILE",
        "MLFLOW_TRACKING_URI",
        "IONQ_API_KEY",
        "QMLOPS_SERVER_URL",
        "QMLOPS_SERVER_TOKEN_FILE",
    ):
        env.pop(var, None)
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "--no-browser",
        f"--ServerApp.root_dir={root}",
    ]
    if os.getuid() == 0:
        argv.append("--allow-root")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}/", token, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(server.url + "api/status", headers=server.headers).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "jupyter server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    server: Server, tmp_path: Path
) -> None:
    base = server.url + API
    served = httpx.get(f"{base}/openapi.json", headers=server.headers, timeout=30)
    assert served.status_code == 200
    spec = served.json()
    assert spec["servers"] == [{"url": f"/{API}"}]
    assert spec == json.loads(SPEC_FILE.read_text(encoding="utf-8"))

    (tmp_path / "schemathesis.toml").write_text(CONFIG, encoding="utf-8")
    operations = sum(
        1 for ops in spec["paths"].values() for m in ops if m in ("get", "post", "put", "delete")
    )
    # The first look at the tracking store imports MLflow and makes its database: not what the
    # response-time check is about.
    assert httpx.get(f"{base}/runs", headers=server.headers, timeout=120).status_code == 200

    started = time.monotonic()
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "--no-color",
            "run",
            f"{base}/openapi.json",
            "-H",
            f"Authorization: token {server.token}",
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--seed",
            "20260101",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    # Every operation is tested (when loaded from its own URL, the document's GET is not).
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", output)
    assert selected, output[-3000:]
    chosen, total, tested = map(int, selected.groups())
    assert chosen == total == tested >= operations - 1, output[-3000:]
    assert server.token not in output
    log = server.log.read_text(errors="replace")
    assert not re.search(r"\] 500 (GET|POST|PUT|DELETE)", log), log[-5000:]
    assert "Uncaught exception" not in log, log[-5000:]
    assert elapsed < 240, f"schemathesis took {elapsed:.0f} s"
