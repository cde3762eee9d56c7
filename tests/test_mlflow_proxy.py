"""The MLflow UI inside JupyterLab, at ``{base_url}mlflow/``.

Real components only: a ``jupyter server`` process with the qmlops extension and
jupyter-server-proxy, which starts a real ``mlflow server`` on the first request under
``/mlflow/``, for the embedded store of a QMLOPS_HOME where the toolkit has logged a job's run.
Requests go through the jupyter server as a browser sends them (token, ``Host``, ``Origin``);
the process the proxy starts is also run on its own, for the stores it cannot serve.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import (
    BELL_QASM2,
    JupyterServer,
    free_port,
    jupyter_env,
    parent_pids,
    process_cmdline,
    wait_for,
)

from qmlops_jupyter.client import Client

pytestmark = pytest.mark.slow

#: A name the browser uses for the server (a hub's, say): neither MLflow's default allowed
#: hosts nor a loopback origin.
LAB_HOST = "qmlops-lab.test"
PROXY = [sys.executable, "-m", "qmlops_jupyter.server.mlflow_proxy"]


def fetch(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 90,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request to 127.0.0.1:``port``, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    sent = dict(headers or {})
    if data is not None:
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of ``pid``: their command lines."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        line = process_cmdline(child)
        if line:
            found[child] = line
        todo.extend(children.get(child, []))
    return found


def listening(pids: set[int]) -> list[str]:
    """The local addresses the processes ``pids`` listen on (TCP)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [
        line.split()[3]
        for line in out.splitlines()
        if any(int(p) in pids for p in re.findall(r"pid=(\d+)", line))
    ]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_mlflow_ui_opens_inside_jupyterlab_with_the_toolkits_runs(
    tracking: Path, client: Client, tmp_path: Path
) -> None:
    """``/mlflow/`` starts MLflow on the embedded store on first use, behind the server's login;
    its page, its scripts and the API calls the page makes (relative to ``/mlflow/``) work
    through the proxy under any host name; MLflow listens on 127.0.0.1 only and stops with the
    server, which still shuts down as it should."""
    job = client.submit(BELL_QASM2, shots=100, wait=True, name="bell-ui")
    run_id = job.mlflow_run_id
    assert run_id
    client.close()

    server = JupyterServer(tmp_path / "root", jupyter_env(tracking, tmp_path), tmp_path / "log")
    server.extra_args = ("--ServerApp.allow_remote_access=True",)
    lab_origin = f"http://{LAB_HOST}:{server.port}"
    # MLflow's own setting: the origin JupyterLab is reached at, for the UI's POST calls.
    server.env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = lab_origin
    auth = {"Authorization": f"token {server.token}"}
    as_browser = {**auth, "Host": f"{LAB_HOST}:{server.port}", "Origin": lab_origin}
    try:
        server.start()
        pid = server.proc.pid  # type: ignore[union-attr]

        # The launcher item.
        status, _, raw = fetch(server.port, "GET", "/server-proxy/servers-info", headers=auth)
        assert status == 200, raw
        (entry,) = [s for s in json.loads(raw)["server_processes"] if s["name"] == "mlflow"]
        assert entry["launcher_entry"]["enabled"] is True
        assert entry["launcher_entry"]["title"] == "MLflow"
        assert entry["launcher_entry"]["path_info"] == "mlflow/"
        assert entry["new_browser_tab"] is False

        # No login, no MLflow: a redirect to the login page, and nothing is started.
        status, headers, raw = fetch(server.port, "GET", "/mlflow/")
        assert status in (302, 403), (status, raw[:200])
        if status == 302:
            assert "/login" in headers["Location"]
        assert b"static-files" not in raw
        status, _, raw = fetch(
            server.port, "GET", "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        )
        assert status in (302, 403) and b"experiments" not in raw
        # The token the server gives its kernels opens the qmlops API only.
        kernel_token = (tracking / "run" / f"server-{pid}.token").read_text()
        status, _, raw = fetch(
            server.port, "GET", "/mlflow/", headers={"X-Qmlops-Kernel-Token": kernel_token}
        )
        assert status in (302, 403), (status, raw[:200])
        assert not [c for c in descendants(pid).values() if "mlflow" in c]

        # First use: MLflow starts on demand; the request waits for it.
        started = time.monotonic()
        status, headers, page = fetch(server.port, "GET", "/mlflow/", headers=as_browser)
        first_answer = time.monotonic() - started
        assert status == 200, (status, page[:500], server.log_tail())
        assert headers["Content-Type"].startswith("text/html")
        assert b"<title>MLflow</title>" in page
        assert first_answer < 60, first_answer
        print(f"MLflow UI answered through the proxy after {first_answer:.1f} s")

        # A script the page loads, by its relative URL.
        script = re.search(rb'<script[^>]+src="(static-files/[^"]+\.js)"', page)
        assert script, page[:1000]
        status, headers, js = fetch(
            server.port, "GET", "/mlflow/" + script.group(1).decode(), headers=as_browser
        )
        assert status == 200 and "javascript" in headers["Content-Type"]
        assert len(js) > 100_000 and b"ajax-api/2.0/mlflow/runs/search" in js

        # The API calls the page makes, relative to /mlflow/.
        status, _, raw = fetch(
            server.port,
            "GET",
            "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=10",
            headers=as_browser,
        )
        assert status == 200, raw[:500]
        experiments = {e["name"]: e["experiment_id"] for e in json.loads(raw)["experiments"]}
        experiment_id = experiments["qmlops"]
        status, _, raw = fetch(
            server.port,
            "POST",
            "/mlflow/ajax-api/2.0/mlflow/runs/search",
            headers=as_browser,
            body={"experiment_ids": [experiment_id], "max_results": 50},
        )
        assert status == 200, raw[:500]
        runs = {r["info"]["run_id"]: r for r in json.loads(raw)["runs"]}
        assert run_id in runs
        tags = {t["key"]: t["value"] for t in runs[run_id]["data"]["tags"]}
        assert tags["qmlops.job_id"] == job.id
        assert runs[run_id]["info"]["run_name"] == "bell-ui"
        # The run's page: /mlflow/#/experiments/<id>/runs/<run id> asks for the run and its files.
        status, _, raw = fetch(
            server.port,
            "GET",
            f"/mlflow/ajax-api/2.0/mlflow/runs/get?run_id={run_id}",
            headers=as_browser,
        )
        assert status == 200 and json.loads(raw)["run"]["info"]["experiment_id"] == experiment_id
        status, _, raw = fetch(
            server.port,
            "GET",
            f"/mlflow/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}",
            headers=as_browser,
        )
        assert status == 200, raw[:500]
        files = {f["path"] for f in json.loads(raw)["files"]}
        assert {"circuit_0.qasm", "counts.json", "histogram.png"} <= files
        status, _, raw = fetch(
            server.port,
            "GET",
            f"/mlflow/get-artifact?path=counts.json&run_uuid={run_id}",
            headers=as_browser,
        )
        assert status == 200 and json.loads(raw)["job_id"] == job.id

        # The page as a browser runs it: the run's own page, the URL form the sidebar opens.
        run_page = f"{lab_origin}/mlflow/#/experiments/{experiment_id}/runs/{run_id}"
        failed = browse(run_page, auth, [f"text={job.id}", "text=bell-ui"])
        # Only MLflow's question for its own logged-in user (its auth app is not used) fails.
        assert not [r for r in failed if not r.endswith("/ajax-api/2.0/mlflow/users/current")]

        # MLflow's protection against cross-site requests still holds behind the proxy.
        status, _, raw = fetch(
            server.port,
            "POST",
            "/mlflow/ajax-api/2.0/mlflow/runs/search",
            headers={**as_browser, "Origin": "https://elsewhere.example"},
            body={"experiment_ids": [experiment_id]},
        )
        assert status == 403 and run_id.encode() not in raw

        # Loopback only, and no store URI on any command line.
        processes = descendants(pid)
        mlflow_pids = {p for p, cmd in processes.items() if "mlflow" in cmd}
        assert any("mlflow server" in processes[p] for p in mlflow_pids), processes
        addresses = listening(mlflow_pids)
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        assert not [c for c in processes.values() if "mlflow.db" in c]
    finally:
        server.stop()
    assert wait_for_exit(mlflow_pids, 20), {p: processes[p] for p in mlflow_pids if alive(p)}
    assert not listening(mlflow_pids)
    # The server still ran its own shutdown (the extension's stop hook removes its token file).
    log = server.log_path.read_text(errors="replace")
    assert "received signal 15, stopping" in log
    assert not (tracking / "run" / f"server-{pid}.token").exists(), log[-3000:]


def browse(url: str, headers: dict[str, str], selectors: list[str]) -> list[str]:
    """Open ``url`` in headless Chromium (``LAB_HOST`` resolving to 127.0.0.1, the token sent
    as a header as a logged-in browser sends its cookie) and wait for each selector; the URLs
    that failed (status 400 or more)."""
    from browser import CHROMIUM_ARGS, chromium_or_fail, playwright_or_fail

    failed: list[str] = []
    with playwright_or_fail()() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_or_fail(),
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {LAB_HOST} 127.0.0.1"],
        )
        try:
            page = chromium.new_context(extra_http_headers=headers).new_page()
            page.on(
                "response",
                lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            page.goto(url, timeout=60_000)
            for selector in selectors:
                try:
                    page.wait_for_selector(selector, timeout=30_000)
                except Exception as exc:
                    raise AssertionError(
                        f"{selector} not shown at {url}: {exc}\nfailed: {failed}\n"
                        + page.inner_text("body")[:2000]
                    ) from None
        finally:
            chromium.close()
    return failed


def wait_for_exit(pids: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def start_proxy_process(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [*PROXY, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, port


def answer(port: int, proc: subprocess.Popen[str], path: str = "/") -> tuple[int, str]:
    def up() -> bool:
        assert proc.poll() is None, proc.communicate()
        try:
            fetch(port, "HEAD", "/", timeout=60)
        except OSError:
            return False
        return True

    wait_for(up, 60, "the MLflow UI process")
    status, _, raw = fetch(port, "GET", path)
    return status, raw.decode()


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_a_tracking_server_elsewhere_gets_a_one_line_page(home: Path, tmp_path: Path) -> None:
    """When runs go to an MLflow server, the tab says where to look, in one line, without the
    URI's password; nothing else is started."""
    env = jupyter_env(home, tmp_path, MLFLOW_TRACKING_URI="https://ana:pw-s3cret-77@mlflow.example")
    proc, port = start_proxy_process(env)
    try:
        status, page = answer(port, proc, "/ajax-api/2.0/mlflow/experiments/search")
        assert status == 503
        assert "tracking goes to the MLflow server at https://mlflow.example: open its UI" in page
        assert "pw-s3cret-77" not in page
        assert not descendants(proc.pid)
    finally:
        err = stop(proc)
    assert err.strip() == (
        "qmlops: the MLflow UI is not available: tracking goes to the MLflow server at "
        "https://mlflow.example: open its UI there (the MLflow UI in JupyterLab serves a local "
        "tracking store)"
    )


def test_a_store_mlflow_cannot_open_is_reported_without_its_password(
    home: Path, tmp_path: Path
) -> None:
    """A database store MLflow cannot open (here: its driver is not installed): MLflow stops,
    the tab shows why in one line; the password is on no command line, in no log line, on no
    page."""
    secret = "pw-s3cret-88"
    env = jupyter_env(
        home,
        tmp_path,
        MLFLOW_TRACKING_URI=f"postgresql+nodriver://ana:{secret}@127.0.0.1:1/mlflow",
    )
    proc, port = start_proxy_process(env)
    seen: dict[int, str] = {}
    done = threading.Event()

    def watch_command_lines() -> None:
        while not done.wait(0.01):
            seen.update({p: c for p, c in descendants(proc.pid).items() if c})

    watcher = threading.Thread(target=watch_command_lines, daemon=True)
    watcher.start()
    try:
        # The request waits in the socket's queue while MLflow tries, and gets the answer.
        status, page = answer(port, proc)
        assert status == 503
        assert "the MLflow server for postgresql+nodriver://127.0.0.1:1/mlflow stopped" in page
        assert secret not in page
    finally:
        done.set()
        watcher.join(5)
        err = stop(proc)
    assert any("mlflow server" in cmd for cmd in seen.values()), seen
    assert not [cmd for cmd in seen.values() if secret in cmd or "postgresql" in cmd]
    assert secret not in err
    assert "qmlops: the MLflow server for postgresql+nodriver://127.0.0.1:1/mlflow stopped" in err


def test_the_ui_process_ends_with_its_parent(home: Path, tmp_path: Path) -> None:
    """Killed with SIGKILL, the server cannot stop what it started: the UI process notices its
    parent is gone and ends (with MLflow, when it runs). A Ctrl-C in the server's terminal,
    which reaches it too, is the server's to decide on: it stays."""
    env = jupyter_env(home, tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    port = free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"p = subprocess.Popen({[*PROXY, '--port', str(port)]!r})\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        wait_for(lambda: bool(listening({child})), 30, "the UI process to listen")
        os.kill(child, signal.SIGINT)
        time.sleep(1)
        assert alive(child) and fetch(port, "GET", "/")[0] == 503
        parent.kill()
        parent.wait(10)
        assert wait_for_exit({child}, 10), "the UI process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)
