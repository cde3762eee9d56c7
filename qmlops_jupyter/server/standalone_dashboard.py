"""One dashboard served on its own by Voila, in the calling process: what
``qmlops dashboard NAME`` runs (see :mod:`qmlops_jupyter.cli.dashboard`).

Voila listens on 127.0.0.1 only, on exactly the port given, and asks for the token given. The
token is masked in log lines and in the environment Voila gives each kernel (the page's request
URL); a browser opened for the user is given a private file that redirects to the page, never
the URL on its command line. What makes the server private (address, port, token, tracebacks
off) is set again after Voila reads its own config files, so a ``voila.json`` cannot weaken it.
SIGTERM and SIGINT stop the server and shut its kernels down.
"""

from __future__ import annotations

import errno
import logging
import shutil
import signal
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest

HOST = "127.0.0.1"


def port_error(port: int, exc: OSError) -> InvalidRequest:
    if exc.errno == errno.EADDRINUSE:
        return InvalidRequest(f"port {port} on {HOST} is in use; pick another with --port")
    return InvalidRequest(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}")


def page_url(port: int, token: str) -> str:
    return f"http://{HOST}:{port}/?token={urllib.parse.quote(token, safe='')}"


def serve(
    title: str,
    path: Path,
    port: int,
    token: str,
    open_browser: bool,
    say: Callable[[str], None],
) -> None:
    """Serve the notebook at ``path`` until SIGTERM or SIGINT; ``say`` tells the user (the
    page's URL once it listens, and how to stop it)."""
    from voila.app import Voila

    from ..vault.redaction import install

    url = page_url(port, token)

    class DashboardServer(Voila):  # type: ignore[misc]
        """Voila on exactly one port, announcing the page itself and stopping on SIGTERM and
        SIGINT alike."""

        stop_requested = False

        def init_settings(self) -> dict[str, Any]:
            settings: dict[str, Any] = super().init_settings()
            start_kernel = self.kernel_manager.start_kernel

            def start_without_token(
                *args: Any, env: dict[str, str] | None = None, **kw: Any
            ) -> Any:
                # Voila hands the page's request URL (token included) to each kernel.
                if env is not None:
                    env = {key: _without(token, value) for key, value in env.items()}
                return start_kernel(*args, env=env, **kw)

            self.kernel_manager.start_kernel = start_without_token
            return settings

        def _request_stop(self, signum: int, frame: Any) -> None:
            # Before the loop runs (still starting up): remembered, and the loop is skipped.
            self.stop_requested = True

        def listen(self) -> None:
            import tornado.ioloop

            try:
                self.app.listen(self.port, self.ip)
            except OSError as exc:
                shutil.rmtree(self.connection_dir, ignore_errors=True)
                raise port_error(self.port, exc) from None
            say(f"{title} dashboard: {url}")
            say("Ctrl-C stops it")
            sys.stdout.flush()
            self.ioloop = tornado.ioloop.IOLoop.current()
            loop = self.ioloop.asyncio_loop
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.ioloop.stop)
            opened = _open_browser(url) if open_browser else None
            try:
                if not self.stop_requested:
                    self.ioloop.start()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                self.stop()  # Voila's: its kernels are shut down
                if opened is not None:
                    opened.unlink(missing_ok=True)

    level = logging.getLogger("qmlops_jupyter").getEffectiveLevel()
    config = _config(path, port, token, level)
    server = DashboardServer(config=config)
    server.initialize([])
    # Voila reads voila.json / voila.py from the working and Jupyter config folders, and they
    # win over the config given: what makes the server private is set again, last.
    _apply(server, config)
    server.voila_configuration.show_tracebacks = False
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server._request_stop)
    install(server.log)
    server.log.addFilter(_QuietVoila())
    for name in ("tornado.access", "tornado.application", "tornado.general"):
        install(logging.getLogger(name))  # request lines carry the token in the URL
    logging.getLogger("tornado.access").setLevel(max(level, logging.WARNING))
    server.start()
    logging.getLogger("qmlops_jupyter").info("%s dashboard stopped", title)


def _without(token: str, value: str) -> str:
    """``value`` with the token masked where a URL's query carries it (``token=...``)."""
    for form in (urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token), token):
        value = value.replace(f"token={form}", "token=***")
    return value


class _QuietVoila(logging.Filter):
    """Drops the warning Voila gives on every page view of a notebook without a signature:
    these notebooks are the package's own, run as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not trusted" not in str(record.msg)


def _config(path: Path, port: int, token: str, level: int) -> Any:
    from traitlets.config import Config

    config = Config()
    config.Voila.notebook_path = str(path)
    config.Voila.root_dir = str(path.parent)
    config.Voila.ip = HOST
    config.Voila.port = port
    config.Voila.port_retries = 0
    config.Voila.base_url = "/"
    config.Voila.server_url = "/"
    config.Voila.token = token
    config.Voila.open_browser = False  # --open is done here, without the token on a command line
    config.Voila.log_level = level
    config.Voila.log_format = "%(asctime)s %(levelname)s voila: %(message)s"
    config.VoilaConfiguration.show_tracebacks = False
    return config


def _apply(server: Any, config: Any) -> None:
    keys = ("ip", "port", "port_retries", "base_url", "server_url", "token", "open_browser")
    for key in (*keys, "notebook_path"):
        setattr(server, key, config.Voila[key])


def _open_browser(url: str) -> Path | None:
    """Open ``url`` in a browser through a private redirect file, as Jupyter does: a browser's
    command line is readable by every local user, the file only by its owner."""
    import html
    import tempfile
    import threading
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        print("no web browser found: open the URL above", file=sys.stderr)
        return None
    fd, name = tempfile.mkstemp(prefix="qmlops-dashboard-", suffix=".html")  # mode 0600
    target = html.escape(url, quote=True)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(
            f'<!DOCTYPE html><html><head><meta http-equiv="refresh" content="0;url={target}">'
            f'</head><body><a href="{target}">Open the dashboard</a></body></html>\n'
        )
    file_url = Path(name).as_uri()
    threading.Thread(target=browser.open, args=(file_url,), daemon=True).start()
    return Path(name)
