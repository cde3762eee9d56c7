"""What the pipeline tests share: notebooks with a ``parameters`` cell, the ``qmlops`` CLI run
in-process, and the ledger's pipeline runs read back with plain SQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from qmlops_jupyter.cli.main import cli
from qmlops_jupyter.client import reset_client

#: Provider secrets, the vault key and a pipeline run's own variables: none may leak into a test
#: from the environment it runs in (a test inside a pipeline run, say).
CLEARED = (
    "IONQ_API_KEY",
    "QMLOPS_CRYPT_KEY",
    "QISKIT_IBM_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "QMLOPS_PIPELINE_RUN_ID",
    "QMLOPS_NOTEBOOK_PATH",
    "QMLOPS_PIPELINE_PARAMETERS",
)


def parameterised_notebook(
    path: Path, parameters: str, *cells: str, title: str | None = None, kernelspec: bool = False
) -> Path:
    """A notebook at ``path``: an optional markdown ``title``, the ``parameters`` cell, then
    ``cells``; ``kernelspec`` names Python 3 in its metadata, as Jupyter would."""
    nb = new_notebook(
        cells=[
            *([new_markdown_cell(title)] if title else []),
            new_code_cell(parameters, metadata={"tags": ["parameters"]}),
            *(new_code_cell(source) for source in cells),
        ]
    )
    if kernelspec:
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
    nbformat.write(nb, str(path))
    return path


def cli_invoker(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``invoke(*args, input=None)``: the CLI in this process, on a fresh client each time."""
    for var in CLEARED:
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        reset_client()
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def pipeline_rows(home: Path, order_by: str = "created_at, id") -> list[dict[str, Any]]:
    """The ledger's pipeline runs, read with plain SQL ([] when there is no ledger yet)."""
    db = home / "ledger.sqlite"
    if not db.exists():
        return []
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("pipeline_runs"):
                return []
            query = sa.text(f"SELECT * FROM pipeline_runs ORDER BY {order_by}")
            return [dict(r._mapping) for r in conn.execute(query)]
    finally:
        engine.dispose()
