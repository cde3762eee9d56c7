"""The MLflow UI inside JupyterLab, at ``{base_url}mlflow/``, behind the server's own login.

jupyter-server-proxy calls :func:`setup_mlflow` (entry point ``jupyter_serverproxy_servers``)
when the server starts. The first request under ``/mlflow/`` starts
``python -m qmlops_jupyter.server.mlflow_proxy --port N`` with the server's environment; that
process (:func:`main`):

- takes 127.0.0.1:N at once and hands the listening socket to ``mlflow server`` (uvicorn
  ``--fd``), so requests wait in the socket's queue while MLflow starts instead of being refused
  (the proxy polls a refused port at doubling intervals: 5 s of start-up became 10 s);
- resolves the tracking store as the rest of the toolkit does (``MLFLOW_TRACKING_URI``, then
  ``tracking.uri`` in ``config.yaml``, then the embedded store under ``QMLOPS_HOME``) and passes
  its URI to MLflow in the environment, never on a command line;
- serves a one-line page instead when there is no local store to show (tracking goes to an
  MLflow server, or full MLflow is not installed) or when MLflow stops;
- stops MLflow, all its processes, when it is told to stop or when the server goes away.

MLflow keeps its own protections: the proxy sends ``Host: 127.0.0.1:N`` (whatever name the
browser used for the server), and MLflow still refuses state-changing API calls whose ``Origin``
is neither a loopback address nor one listed in ``MLFLOW_SERVER_CORS_ALLOWED_ORIGINS``.

This module imports neither tornado nor MLflow; :func:`mlflow_server_command` is the one place
that says how an MLflow server for a local store is started.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import html
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..tracking.ui import HOST, mlflow_server_command

if TYPE_CHECKING:
    from ..tracking.config import TrackingConfig

#: How long MLflow may take to answer (it starts in about 5 s on two cores; an unreachable
#: database store makes it retry for about 100 s before it gives up).
START_TIMEOUT = 150.0
#: How long the proxy waits for a first answer: longer than the above, so that it is always
#: this process that answers (with MLflow, or with why not), never the proxy's own timeout.
PROXY_TIMEOUT = START_TIMEOUT + 30
#: How long MLflow gets to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0
#: How often the process looks for its parent (the jupyter server) being gone.
PARENT_POLL = 0.5


def setup_mlflow() -> dict[str, Any]:
    """The jupyter-server-proxy server process ``mlflow``: a launcher item "MLflow" that opens
    in a JupyterLab tab."""
    _keep_server_shutdown()
    return {
        "command": [sys.executable, "-m", "qmlops_jupyter.server.mlflow_proxy", "--port", "{port}"],
        "timeout": PROXY_TIMEOUT,
        # MLflow's pages and API calls use relative URLs: the prefix is stripped.
        "absolute_url": False,
        "new_browser_tab": False,
        # MLflow answers loopback host names only (DNS-rebinding protection on its port); the
        # proxy reaches it on loopback whatever name the browser used for the server.
        "request_headers_override": {"Host": f"{HOST}:{{port}}"},
        "launcher_entry": {
            "enabled": True,
            "title": "MLflow",
            "category": "Other",
            "icon_path": str(Path(__file__).parent / "static" / "mlflow.svg"),
        },
    }


def _keep_server_shutdown() -> None:
    """simpervisor (which runs proxied processes) replaces the server's SIGTERM and SIGINT
    handlers with one that signals its processes and then calls ``sys.exit(0)``
    (jupyterhub/simpervisor#38): the server would then end without its shutdown (extension stop
    hooks, kernels). Keep the signalling, then hand the signal to the handler the server had."""
    try:
        from simpervisor import atexitasync
    except ImportError:
        return
    original = getattr(atexitasync, "_handle_signal", None)
    if original is None or getattr(original, "keeps_server_shutdown", False):
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle_signal(signum: int, frame: Any = None) -> None:
        before = previous.get(signum)
        if not callable(before):
            original(signum, frame)
            return
        for handler in list(getattr(atexitasync, "_handlers", ())):
            handler(signum)
        before(signum, frame)

    handle_signal.keeps_server_shutdown = True  # type: ignore[attr-defined]
    atexitasync._handle_signal = handle_signal


# -- the MLflow server for a local store ---------------------------------------------------------


def local_store() -> tuple[TrackingConfig | None, str | None]:
    """The tracking store this process would log to, if it is one an MLflow UI can serve here;
    else ``(None, why not)`` in one line."""
    from ..config import Settings
    from ..errors import QmlopsError, one_line
    from ..tracking.config import register_uri_secrets, resolve

    try:
        settings = Settings.from_env()
        cfg = resolve(settings)
    except QmlopsError as exc:
        return None, f"the tracking settings cannot be read: {exc}"
    except ValueError as exc:  # config.yaml that does not validate
        return None, f"the tracking settings cannot be read: {one_line(exc)}"
    register_uri_secrets(cfg.uri)
    if cfg.artifact_root is None:
        return None, (
            f"tracking goes to the MLflow server at {cfg.safe_uri}: open its UI there "
            "(the MLflow UI in JupyterLab serves a local tracking store)"
        )
    if find_spec("mlflow.server") is None or find_spec("flask") is None:
        return None, (
            "the MLflow UI needs the full mlflow package; install it with: "
            "pip install 'qmlops-jupyter[mlflow]'"
        )
    if cfg.embedded:
        settings.ensure_home()
        (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    return cfg, None


# -- the process jupyter-server-proxy starts ------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmlops_jupyter.server.mlflow_proxy",
        description="Serve the MLflow UI of the local tracking store on 127.0.0.1 (started by "
        "jupyter-server-proxy at {base_url}mlflow/).",
    )
    parser.add_argument("--port", type=int, required=True, help="Port on 127.0.0.1.")
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, args.port))
    listener.listen(128)
    stop = _stop_event()
    cfg, reason = local_store()
    if cfg is None:
        _say(f"qmlops: the MLflow UI is not available: {reason}")
        _serve_message(listener, reason or "", stop)
        return 0
    return _run_mlflow(cfg, listener, stop)


def _run_mlflow(cfg: TrackingConfig, listener: socket.socket, stop: threading.Event) -> int:
    from ..tracking.config import scrub
    from ..vault.redaction import redact

    port = listener.getsockname()[1]
    argv, extra = mlflow_server_command(cfg, port, listen_fd=0)
    lock = _new_store_lock(cfg)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=listener.fileno(),  # uvicorn --fd 0
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **extra},
        start_new_session=True,  # its own process group: stopped as one
    )
    last_lines: collections.deque[str] = collections.deque(maxlen=20)
    assert proc.stdout is not None
    pump = threading.Thread(
        target=_pump, args=(proc.stdout, last_lines, lambda s: scrub(redact(s))), daemon=True
    )
    pump.start()
    _say(f"qmlops: MLflow UI for {cfg.safe_uri} starting on {HOST}:{port} (pid {proc.pid})")
    late = threading.Event()
    threading.Thread(
        target=_watch_start, args=(port, proc, lock, started, late), daemon=True
    ).start()
    while not stop.wait(PARENT_POLL):
        if proc.poll() is not None or late.is_set():
            break
    exit_code = proc.poll()
    _stop_group(proc)
    if stop.is_set():
        return 0
    pump.join(5)
    if lock is not None:
        lock.close()
    if exit_code is None:
        reason = f"the MLflow server for {cfg.safe_uri} did not answer within {START_TIMEOUT:.0f} s"
    else:
        error = next((line for line in reversed(last_lines) if line.strip()), "")
        reason = f"the MLflow server for {cfg.safe_uri} stopped (exit code {exit_code})"
        if error:
            reason += f": {error.strip()}"
    _say(f"qmlops: {reason}")
    # The socket is still ours: answer with why, instead of leaving requests hanging.
    _serve_message(listener, reason + " (the jupyter server's log has more)", stop)
    return 0


def _watch_start(
    port: int,
    proc: subprocess.Popen[bytes],
    lock: IO[str] | None,
    started: float,
    late: threading.Event,
) -> None:
    """Wait for MLflow's first answer, then release the new store's lock and say so; set
    ``late`` if it does not come within START_TIMEOUT."""
    deadline = started + START_TIMEOUT
    while proc.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            late.set()
            break
        # Straight to the socket: no HTTP proxy from the environment in between.
        conn = http.client.HTTPConnection(HOST, port, timeout=min(left, 10))
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                _say(f"qmlops: MLflow UI ready in {time.monotonic() - started:.1f} s")
                break
        except OSError:
            time.sleep(0.2)
        finally:
            conn.close()
    if lock is not None:
        lock.close()


def _new_store_lock(cfg: TrackingConfig) -> IO[str] | None:
    """A SQLite store that does not exist yet is created by MLflow as it starts; the toolkit
    creates stores under the same file lock (``<db>.init.lock``), so a kernel logging its first
    run meanwhile waits instead of racing the table creation. Released once MLflow answers."""
    import fcntl

    if not cfg.uri.startswith("sqlite:///"):
        return None
    path = Path(cfg.uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path.with_name(path.name + ".init.lock"), "a")  # noqa: SIM115  (held on purpose)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _pump(stream: IO[bytes], last: collections.deque[str], clean: Callable[[str], str]) -> None:
    """MLflow's output, with any password taken out, onto this process's stderr (the jupyter
    server's log)."""
    for raw in iter(stream.readline, b""):
        line = clean(raw.decode(errors="replace").rstrip("\n"))
        last.append(line)
        _say(line)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):  # what it may have left behind
            os.killpg(proc.pid, signal.SIGKILL)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_GRACE)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # whatever is left of the group
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_GRACE)


def _stop_event() -> threading.Event:
    """Set on SIGTERM or SIGHUP, or when the parent (the jupyter server) is gone, even killed
    with SIGKILL: this process and MLflow never outlive the server. SIGINT is ignored: a Ctrl-C
    in the server's terminal reaches this process too, and the server asks before it stops."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(PARENT_POLL):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def _serve_message(listener: socket.socket, message: str, stop: threading.Event) -> None:
    """Answer every request with ``message``: a one-line page (status 503) in the MLflow tab."""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>MLflow</title></head>"
        "<body style='font-family: sans-serif; margin: 2em'>"
        f"<p class='qmlops-mlflow-unavailable'>{html.escape(message)}</p></body></html>"
    ).encode()

    class Message(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(503)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Message, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    listener.close()


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
