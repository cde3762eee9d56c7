"""Parked pipeline runs: waiting for provider jobs with the kernel freed, then resuming.

A notebook calls :func:`qmlops_jupyter.pipeline.wait_for`. In a pipeline run, while a job is
queued at a provider and an engine host is alive, the kernel saves its variables (a file in the
run's folder, readable by its owner only), leaves a park request beside it and ends the cell
with ``PipelineParked``. The runner (:func:`~.runner.drive`) sees that outcome and calls
:func:`record_park`: the run becomes PARKED with ``parked_jobs``, ``park_cell`` (the index of
the cell in the *input* notebook) and ``parked_at``; the kernel is stopped and the runner exits
0. Nothing runs for the run while it is parked.

An engine host's duty :func:`resume_due` (about once a second) finds PARKED runs whose jobs
have all ended (or need attention), claims each with a compare-and-set on its lease
(``lease_holder``, ``lease_until``: two engine hosts never resume one run twice), and launches
``python -m qmlops_jupyter.pipelines.parking RUN_ID LEASE`` (:func:`resume`). That process takes
the run only if the lease is still its own (PARKED -> RUNNING, compare-and-set), starts a new
kernel, restores the variables, and executes the cells from the park cell on; ``wait_for`` runs
again and returns the results at once. A launched process that never takes its run leaves the
lease to expire after :data:`LAUNCH_GRACE` seconds, and the run is resumed again.

The output notebook is stitched: the cells before the park cell keep the outputs of the part
that ran them, the rest come from the resumed part. A run can park any number of times. Its
timeout counts running time only: the parked time is left out (the time used so far is kept in
the run's folder, ``parked.json``). It is logged to MLflow and notified once, when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from .execute import ERROR_MARKER_TAG, RESTORE_TAG, is_input_cell
from .models import PipelineRunState
from .store import PipelineRuns, runs

if TYPE_CHECKING:
    from ..client import Client
    from .host import PipelineHost
    from .models import PipelineRun
    from .runner import Part

log = logging.getLogger("qmlops_jupyter.pipelines")

S = PipelineRunState

#: Seconds a launched resume has to take its run before another engine host may try.
LAUNCH_GRACE = 120.0
#: The runner's own record of a run's parks (in the run's folder).
BOOK = "parked.json"
#: The input notebook's cells as the first part ran them (outputs cleared): what resumed parts
#: execute from, whatever happens to the notebook file meanwhile.
SOURCE = "source.ipynb"
OUTPUT = "output.ipynb"


# -- in the runner: a park ----------------------------------------------------------------------


def take_park_request(folder: Path) -> dict[str, Any] | None:
    """The request ``wait_for`` left (jobs, state file, names not saved), removed."""
    from ..pipeline import PARK_REQUEST

    path = folder / PARK_REQUEST
    try:
        request = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    if not isinstance(request, dict) or not request.get("jobs") or not request.get("state"):
        return None
    return {
        "jobs": [str(j) for j in request["jobs"]],
        "state_file": str(request["state"]),
        "skipped": [str(n) for n in request.get("skipped", [])],
    }


def record_park(
    client: Client,
    run: PipelineRun,
    part: Part,
    final: dict[str, Any],
    output: Path | None,
    folder: Path,
    running_seconds: float,
    say: Any,
) -> PipelineRun:
    """The run becomes PARKED at ``final["cell"]``; its output so far is stitched, its state
    and running time kept for the resume."""
    import nbformat

    book = read_book(folder)
    previous_state = book.get("state_file")
    book["used_seconds"] = float(book.get("used_seconds", 0.0)) + running_seconds
    book["parts"] = part.number
    book["state_file"] = final["state_file"]
    book.setdefault("parks", []).append(
        {
            "cell": final["cell"],
            "jobs": final["jobs"],
            "at": client.ledger.clock().isoformat(),
            "not_saved": final["skipped"],
        }
    )
    if output is not None:
        if part.number == 1:
            _write_source(nbformat.read(str(output), as_version=4), folder / SOURCE)
        stitch(folder, output, part, book["parks"])
    _write_json(folder / BOOK, book)
    if previous_state and previous_state != final["state_file"]:
        (folder / previous_state).unlink(missing_ok=True)
    run = PipelineRuns(client.ledger).update(
        run.id,
        state=S.PARKED,
        parked_jobs=final["jobs"],
        park_cell=final["cell"],
        parked_at=client.ledger.clock(),
        runner_pid=None,
        heartbeat_at=None,
        lease_holder=None,
        lease_until=None,
        output_path=str(folder / OUTPUT) if (folder / OUTPUT).exists() else run.output_path,
    )
    jobs = ", ".join(final["jobs"])
    say(
        f"pipeline run {run.id} parked at cell {final['cell']} until job(s) {jobs} end; an "
        "engine host resumes it"
    )
    log.info(
        "pipeline run %s parked at cell %s (jobs %s)",
        run.id,
        final["cell"],
        jobs,
        extra={"event": "pipeline_run_parked", "new_state": S.PARKED.value},
    )
    return run


def read_book(folder: Path) -> dict[str, Any]:
    try:
        book = json.loads((folder / BOOK).read_text())
        return book if isinstance(book, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _write_notebook(nb: Any, path: Path) -> None:
    import nbformat

    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, path)


def _write_source(executed: Any, path: Path) -> None:
    """The input cells of the first part's notebook, as they were before running."""
    import copy

    nb = copy.deepcopy(executed)
    cells = []
    for cell in nb.cells:
        if not is_input_cell(cell):
            continue
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("papermill", None)
    _write_notebook(nb, path)


def stitch(folder: Path, segment: Path, part: Part, parks: list[dict[str, Any]]) -> Path:
    """``output.ipynb``: the notebook so far (cells before this part's first cell, from the
    parts that ran them) followed by this part's cells (without its restore cell)."""
    import nbformat

    target = folder / OUTPUT
    executed = nbformat.read(str(segment), as_version=4)
    if part.number == 1 or not target.exists():
        nb = executed
    else:
        nb = nbformat.read(str(target), as_version=4)
        kept, index = [], 0
        for cell in nb.cells:
            if ERROR_MARKER_TAG in cell.get("metadata", {}).get("tags", []):
                continue  # the markers of an earlier park
            if is_input_cell(cell):
                if index >= part.cell_offset:
                    break
                index += 1
            kept.append(cell)
        for cell in executed.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if RESTORE_TAG in tags or "injected-parameters" in tags:
                continue
            kept.append(cell)
        nb.cells = kept
        papermill = dict(nb.metadata.get("papermill", {}))
        for key in ("end_time", "exception"):
            if key in executed.metadata.get("papermill", {}):
                papermill[key] = executed.metadata["papermill"][key]
        nb.metadata["papermill"] = papermill
    nb.metadata.setdefault("qmlops", {})["parks"] = parks
    _write_notebook(nb, target)
    return target


def final_output(folder: Path, output: Path | None, part: Part) -> Path | None:
    """The run's ``output.ipynb`` at its end: the last attempt's notebook, stitched behind
    the earlier parts' when the run was parked."""
    import shutil

    if output is None:
        target = folder / OUTPUT
        return target if part.number > 1 and target.exists() else None
    if part.number == 1:
        shutil.copyfile(output, folder / OUTPUT)
        return folder / OUTPUT
    return stitch(folder, output, part, read_book(folder).get("parks", []))


def forget_state(folder: Path) -> None:
    """Remove the saved variables once the run has ended (they may hold anything)."""
    from ..pipeline import PARK_REQUEST

    for path in folder.glob("parked-state-*"):
        path.unlink(missing_ok=True)
    (folder / PARK_REQUEST).unlink(missing_ok=True)


# -- the engine host's duty ----------------------------------------------------------------------


def resume_due(host: PipelineHost) -> list[str]:
    """Launch the resume of every PARKED run whose jobs have all ended and that no engine host
    is resuming; the ids of the runs launched."""
    ledger = host.ledger
    now = ledger.clock()
    with ledger._read() as conn:
        rows = conn.execute(
            select(runs.c.id, runs.c.owner, runs.c.parked_jobs).where(
                runs.c.state == S.PARKED.value,
                or_(runs.c.lease_until.is_(None), runs.c.lease_until < now),
            )
        ).all()
    launched = []
    for row in rows:
        try:
            if _jobs_done(host, row.parked_jobs or []) and _launch(host, row, now):
                launched.append(row.id)
        except Exception:  # one run must not hold back the others
            log.exception("parked pipeline run %s could not be resumed; will retry", row.id)
    return launched


def _jobs_done(host: PipelineHost, job_ids: list[str]) -> bool:
    from ..errors import JobNotFound
    from ..states import JobState

    for job_id in job_ids:
        try:
            state = host.ledger.get_job(job_id).state
        except JobNotFound:
            continue  # wait_for says so when the run resumes
        if not (state.terminal or state is JobState.NEEDS_ATTENTION):
            return False
    return True


def _launch(host: PipelineHost, row: Any, now: Any) -> bool:
    lease = f"{host.holder}:{secrets.token_hex(6)}"[-255:]
    with host.ledger._write() as conn:
        claimed = conn.execute(
            update(runs)
            .where(
                runs.c.id == row.id,
                runs.c.state == S.PARKED.value,
                or_(runs.c.lease_until.is_(None), runs.c.lease_until < now),
            )
            .values(lease_holder=lease, lease_until=now + timedelta(seconds=LAUNCH_GRACE))
        ).rowcount
    if claimed != 1:
        return False  # another engine host took it
    folder = host.settings.home / "pipelines" / "runs" / row.id
    try:
        child = host.launch(row.owner, [row.id, lease], folder / "resume.log", module=__name__)
    except Exception:
        with host.ledger._write() as conn:  # let the next tick (or another host) try again
            conn.execute(
                update(runs)
                .where(runs.c.id == row.id, runs.c.lease_holder == lease)
                .values(lease_holder=None, lease_until=None)
            )
        raise
    # Reap it when it ends (it outlives nothing: the engine host may stop first).
    threading.Thread(target=child.wait, name=f"qmlops-reap-{child.pid}", daemon=True).start()
    log.info(
        "pipeline run %s: its jobs ended; resuming it (pid %d)",
        row.id,
        child.pid,
        extra={"event": "pipeline_run_resumed", "actor": host.holder},
    )
    return True


# -- the resume process ------------------------------------------------------------------------


def resume(run_id: str, lease: str, say: Any = None) -> int:
    """Take the parked run (if the lease is still ``lease``) and run it from its park cell;
    the exit code: 0 when it completed or parked again, 8 when it failed, 130 cancelled."""
    from ..client import Client
    from ..errors import PipelineRunFailed
    from .runner import Part, conclude, drive, runs_folder

    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    client = Client()
    store = PipelineRuns(client.ledger)
    took = store.compare_and_set(
        run_id,
        {"state": S.PARKED, "lease_holder": lease, "owner": client.owner},
        state=S.RUNNING,
        runner_host=socket.gethostname()[:255],
        runner_pid=os.getpid(),
        heartbeat_at=client.ledger.clock(),
        lease_holder=None,
        lease_until=None,
    )
    if not took:
        say(f"pipeline run {run_id}: not resumed here (it moved on, or another host has it)")
        return 0
    run = store.get(run_id, client.owner)
    folder = runs_folder(client) / run.id
    try:
        book = read_book(folder)
        park_cell = int(run.park_cell or 0)
        number = int(book.get("parts", 1)) + 1
        if not book.get("state_file"):
            raise FileNotFoundError(f"no saved state in {folder}")
        source = _resume_source(folder, park_cell, str(book["state_file"]), number)
        part = Part(
            source=str(source),
            cell_offset=park_cell,
            number=number,
            first_attempt=max(run.attempts, 1),
        )
        deadline = None
        if run.timeout is not None:
            left = max(run.timeout - float(book.get("used_seconds", 0.0)), 0.0)
            deadline = time.monotonic() + left
    except Exception as exc:
        log.exception("pipeline run %s could not be resumed", run.id)
        final = {
            "status": "failed",
            "cell": None,
            "ename": "PipelineError",
            "evalue": f"the parked run could not be resumed: {exc.__class__.__name__}: {exc}",
        }
        try:
            conclude(client, run, final, None, say)
        except PipelineRunFailed:
            return 8
        return 0
    say(f"pipeline run {run.id}: resuming from cell {park_cell}")
    try:
        drive(
            client,
            run,
            part,
            folder=folder,
            deadline=deadline,
            retry_delay=1.0,
            say=say,
            mlflow_experiment=run.experiment,
        )
    except PipelineRunFailed as exc:
        say(f"qmlops: error: {exc}")
        return 8
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 0


def _resume_source(folder: Path, park_cell: int, state_file: str, number: int) -> Path:
    """The notebook a resumed part executes: a cell that restores the saved variables, then
    the input notebook's cells from the park cell on."""
    import nbformat
    from nbformat.v4 import new_code_cell

    state = folder / state_file
    if not state.is_file():
        raise FileNotFoundError(f"the saved state {state} is gone")
    nb = nbformat.read(str(folder / SOURCE), as_version=4)
    restore = new_code_cell(
        f'__import__("qmlops_jupyter.pipeline", fromlist=["_"]).restore_namespace({str(state)!r})',
        metadata={"tags": [RESTORE_TAG]},
    )
    nb.cells = [restore, *nb.cells[park_cell:]]
    path = folder / f"part-{number}.source.ipynb"
    _write_notebook(nb, path)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m qmlops_jupyter.pipelines.parking RUN_ID LEASE", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return resume(argv[0], argv[1])


if __name__ == "__main__":
    sys.exit(main())
