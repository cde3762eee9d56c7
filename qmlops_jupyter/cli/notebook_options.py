"""The options every way of running a notebook shares (``pipeline run``, ``pipeline schedule``,
``pipeline sweep``): the same names, types and defaults, with help that says what each applies
to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def notebook_options(
    *, parameter: str, experiment: str, timeout: str, retries: str, retry_delay: bool = True
) -> Callable[[F], F]:
    """``-p NAME VALUE`` (as ``parameters``), ``--backend``, ``--credential``, ``--experiment``,
    ``--timeout``, ``--retries`` and, with ``retry_delay``, the hidden ``--retry-delay``."""
    decorators = [
        click.option(
            "-p",
            "--parameter",
            "parameters",
            nargs=2,
            multiple=True,
            metavar="NAME VALUE",
            help=parameter,
        ),
        click.option("--backend", "-b", default=None, help="Passed to the notebook as `backend`."),
        click.option(
            "--credential",
            default=None,
            metavar="ALIAS",
            help="A stored credential's alias, passed as `credential` (the alias, never the "
            "secret).",
        ),
        click.option("--experiment", "-e", default=None, help=experiment),
        click.option("--timeout", default=None, type=float, help=timeout),
        click.option("--retries", default=0, type=int, show_default=True, help=retries),
    ]
    if retry_delay:
        decorators.append(
            click.option(
                "--retry-delay",
                default=1.0,
                type=float,
                hidden=True,
                help="Base of the exponential backoff between attempts, in seconds.",
            )
        )

    def apply(command: F) -> F:
        for decorator in reversed(decorators):  # listed in --help in the order above
            command = decorator(command)
        return command

    return apply
