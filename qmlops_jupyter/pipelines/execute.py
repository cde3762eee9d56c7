"""One attempt of a pipeline run, in a child process of its own (``python -m
qmlops_jupyter.pipelines.execute SPEC.json``): papermill executes the notebook and the outcome
is written as JSON to the spec's ``result`` path. The parent owns the timeout: it kills this
process's group and the kernel's.

The spec: ``{"input", "output", "result", "parameters", "kernel_name", "language", "cwd"}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

INJECTED_TAG = "injected-parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"


def input_cell_index(output_path: str, fallback: int) -> int:
    """The failing cell's index in the input notebook: papermill's index counts the cell it
    injected (and its output gains an error marker at the top)."""
    try:
        import nbformat

        nb = nbformat.read(output_path, as_version=4)
    except Exception:
        return fallback
    index = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if INJECTED_TAG in tags or ERROR_MARKER_TAG in tags:
            continue
        if cell.get("metadata", {}).get("papermill", {}).get("exception") is True or any(
            o.get("output_type") == "error" for o in cell.get("outputs", [])
        ):
            return index
        index += 1
    return fallback


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec["parameters"],
            kernel_name=spec["kernel_name"],
            language=spec["language"],
            cwd=spec["cwd"],
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
        )
    except PapermillExecutionError as exc:
        return {
            "status": "failed",
            "cell": input_cell_index(spec["output"], exc.cell_index),
            "exec_count": exc.exec_count,
            "ename": exc.ename,
            "evalue": exc.evalue,
        }
    except Exception as exc:  # the kernel died, the notebook could not be read ...
        return {
            "status": "failed",
            "cell": None,
            "ename": exc.__class__.__name__,
            "evalue": " ".join(str(exc).split()),
        }
    return {"status": "completed"}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    outcome = execute(spec)
    Path(spec["result"]).write_text(json.dumps(outcome))
    return 0 if outcome["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
