"""``qmlops dashboard NAME``: one dashboard served on its own, by Voila in this process.

The server listens on 127.0.0.1 only and asks for a token: ``QMLOPS_DASHBOARD_TOKEN`` when it
is set, a fresh random one otherwise. The token reaches the user in the URL printed on stdout;
it is never put on a command line (a browser opened with ``--open`` is given a private file
that redirects to the page) and is masked in log lines. The kernels Voila starts, one per page
view, inherit this process's environment, set first to the CLI's settings so they read the
same ledger. SIGTERM or Ctrl-C stops the server and shuts its kernels down (exit 0).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from importlib.util import find_spec
from typing import TYPE_CHECKING

import click

from ..dashboards import DASHBOARDS
from ..errors import InvalidRequest, MissingBackendDependency
from .main import handle_errors

if TYPE_CHECKING:
    pass

#: The environment variable a fixed token is read from (a fresh one is made without it).
TOKEN_ENV = "QMLOPS_DASHBOARD_TOKEN"
DEFAULT_PORT = 8866


@click.command(
    "dashboard",
    help=(
        f"Serve one dashboard ({', '.join(DASHBOARDS)}) with Voila on 127.0.0.1, behind a "
        f"token ({TOKEN_ENV}, or a fresh one), until Ctrl-C or SIGTERM. Prints the page's URL, "
        "token included."
    ),
)
@click.argument("name")
@click.option(
    "--port",
    "-p",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The port on 127.0.0.1; a busy one is an error, not another port.",
)
@click.option("--open", "open_browser", is_flag=True, help="Also open the page in a browser.")
@handle_errors
def dashboard(name: str, port: int, open_browser: bool) -> None:
    from ..config import Settings
    from ..dashboards import dashboard as find_dashboard
    from ..dashboards import notebook_path
    from ..server.standalone_dashboard import serve
    from ..vault.redaction import register

    board = find_dashboard(name)
    path = notebook_path(board.name)
    if find_spec("voila") is None:
        raise MissingBackendDependency(
            "the dashboards need Voila, which is not installed; install it with: "
            "pip install 'qmlops-jupyter[jupyter]'"
        )
    settings = Settings.from_env()
    settings.ensure_home()
    token = _token()
    register(token)
    _check_port(port)
    # The kernels inherit this environment: the same home, ledger, backends file and owner.
    os.environ.update(settings.environment())
    serve(board.title, path, port, token, open_browser, say=_say)


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def _token() -> str:
    """The token from the environment (then removed from it, so no kernel sees it), or a
    fresh one."""
    given = os.environ.pop(TOKEN_ENV, "").strip()
    if given and any(c.isspace() or not c.isprintable() for c in given):
        raise InvalidRequest(f"{TOKEN_ENV} must not hold spaces or control characters")
    return given or secrets.token_urlsafe(32)


def _check_port(port: int) -> None:
    from ..server.standalone_dashboard import HOST, port_error

    """A one-line error now for a port that is taken, rather than Voila's log lines later."""
    with socket.socket() as probe:
        # As Tornado binds: a port left in TIME_WAIT by a previous server is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise port_error(port, exc) from None
