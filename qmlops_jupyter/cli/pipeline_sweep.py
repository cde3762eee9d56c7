"""``qmlops pipeline sweep``: one pipeline run per grid point, on Dask."""

from __future__ import annotations

import click

from .main import handle_errors


@click.command("sweep")
@click.argument("notebook")
@handle_errors
def sweep_command(notebook: str) -> None:
    """Run NOTEBOOK once per point of a parameter grid, on Dask."""
