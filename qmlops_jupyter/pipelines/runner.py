"""``qmlops pipeline run``: execute a notebook with papermill, as a recorded pipeline run.

Papermill runs in this process; each attempt's kernel leads a process group of its own
(``setsid``; see :mod:`.execute`). A watchdog thread stops the kernel, and every process it
started, at the run's deadline (SIGTERM, then SIGKILL after a grace period); SIGTERM or Ctrl-C
to this process does the same and the run ends CANCELLED.

Semantics:

* ``timeout`` bounds the whole run (every attempt and the waits between them; a parked run's
  time while parked does not count). A timed-out run ends TIMED_OUT and is not retried: a
  notebook that ran out of time once would do it again.
* ``retries`` more attempts follow a failed one (a failing cell, a dead kernel), after an
  exponential backoff with jitter: ``retry_delay * 2**(k-1)`` times a factor in [0.5, 1.5).
* Every attempt's executed notebook is kept (``attempt-<k>.ipynb``); the last one is also
  ``output.ipynb``, all under ``QMLOPS_HOME/pipelines/runs/<run id>/``.
* The notebook gets its parameters from papermill (``-p`` values, ``backend``, ``credential``
  — the alias, never the secret — and ``qmlops_pipeline_run_id``); its kernel's environment
  has ``QMLOPS_PIPELINE_RUN_ID``, ``QMLOPS_NOTEBOOK_PATH``, ``QMLOPS_PIPELINE_PARAMETERS`` and
  ``QMLOPS_PIPELINE_RUN_DIR`` so jobs submitted inside link to the run, and
  ``qmlops_jupyter.pipeline.wait_for`` can park it (see :mod:`.parking`).
* While RUNNING, the run's ``heartbeat_at`` is refreshed every :data:`HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    InvalidRequest,
    MissingBackendDependency,
    PipelineRunFailed,
    UnknownBackend,
    one_line,
)
from .execute import KILL_GRACE_SECONDS, Kernel, _alive, execute, stop_process_tree
from .models import PipelineRun, PipelineRunState

if TYPE_CHECKING:
    from ..client import Client
    from ..tracking.config import TrackingConfig
    from ..tracking.writer import RunWriter
    from .store import PipelineRuns

log = logging.getLogger("qmlops_jupyter.pipelines")

__all__ = [
    "KILL_GRACE_SECONDS",
    "PipelineRequest",
    "_alive",
    "run_pipeline",
    "stop_process_tree",
]

RUN_ID_PARAMETER = "qmlops_pipeline_run_id"
#: The longest wait between two attempts.
MAX_RETRY_DELAY_SECONDS = 60.0
#: Seconds between two refreshes of a RUNNING run's ``heartbeat_at``.
HEARTBEAT_SECONDS = 10.0

S = PipelineRunState


@dataclass
class PipelineRequest:
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    credential: str | None = None
    experiment: str | None = None
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 1.0
    #: A QUEUED run already in the ledger (made by a schedule) to run, instead of a new one.
    run_id: str | None = None
    #: Written on a new run: ``pipeline_id``, ``schedule_id``, ``scheduled_for``,
    #: ``sweep_id``, ``sweep_point``, ``mlflow_parent_run_id`` (nests its MLflow run).
    links: dict[str, Any] = field(default_factory=dict)
    #: Variables added to the kernel's environment (not recorded: they tune, never carry data).
    kernel_environment: dict[str, str] = field(default_factory=dict)


def typed_value(value: str) -> Any:
    """A ``-p`` value typed the way papermill's ``-p`` types it: bools, None, ints, floats,
    else the string."""
    from ..tracking.lineage import _papermill_value

    return _papermill_value(value)


def parse_parameters(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {name: typed_value(value) for name, value in pairs}


def runs_folder(client: Client) -> Path:
    return client.settings.home / "pipelines" / "runs"


# -- checks, all before anything is written ------------------------------------------------------


def check_request(client: Client, request: PipelineRequest) -> tuple[Path, dict[str, Any]]:
    """The notebook's absolute path and the parameters papermill will inject (without the run
    id); raises a typed error for anything that cannot run."""
    notebook, parameters = _check_arguments(request)
    _check_notebook(request.notebook, notebook)
    _check_with_client(client, request, parameters)
    return notebook, parameters


def _check_arguments(request: PipelineRequest) -> tuple[Path, dict[str, Any]]:
    """What can be checked without reading the notebook or the ledger."""
    from importlib.util import find_spec

    if find_spec("papermill") is None:
        raise MissingBackendDependency(
            "pipelines need papermill, which is not installed; install it with: "
            "pip install 'qmlops-jupyter[papermill]'"
        )
    if request.retries < 0:
        raise InvalidRequest(f"--retries must be 0 or more, not {request.retries}")
    if request.timeout is not None and not request.timeout > 0:
        raise InvalidRequest(f"--timeout must be more than 0 seconds, not {request.timeout:g}")
    if request.retry_delay < 0:
        raise InvalidRequest(f"--retry-delay must be 0 or more, not {request.retry_delay:g}")
    notebook = Path(request.notebook).expanduser()
    if notebook.suffix != ".ipynb":
        raise InvalidRequest(f"{request.notebook}: not a notebook (expected a .ipynb file)")
    if not notebook.is_file():
        raise InvalidRequest(f"{request.notebook}: no such notebook")
    parameters = dict(request.parameters)
    for name in parameters:
        if not name.isidentifier():
            raise InvalidRequest(f"parameter name {name!r} is not a Python identifier")
    for name, value in (("backend", request.backend), ("credential", request.credential)):
        if value is not None:
            if name in parameters:
                raise InvalidRequest(f"give {name} with --{name} or with -p, not both")
            parameters[name] = value
    if RUN_ID_PARAMETER in parameters:
        raise InvalidRequest(f"{RUN_ID_PARAMETER} is set by the pipeline run itself")
    return notebook.resolve(), parameters


def _check_notebook(given: str, notebook: Path) -> None:
    try:
        import nbformat

        nbformat.read(str(notebook), as_version=4)
    except Exception as exc:
        raise InvalidRequest(
            f"{given}: not a readable notebook: {exc.__class__.__name__}"
        ) from None


def _check_with_client(
    client: Client, request: PipelineRequest, parameters: dict[str, Any]
) -> None:
    if request.backend is not None:
        _check_backend(client, request.backend)
    if request.credential is not None:
        from ..vault.store import check_alias

        # CredentialNotFound (exit 3) names the aliases there are; nothing is decrypted.
        client.vault.info(check_alias(request.credential))
    _refuse_secrets(client, parameters)


def _check_backend(client: Client, name: str) -> None:
    registry = client.registry
    plugin = name.partition(":")[0]
    if name not in registry.backends_file.backends and plugin not in registry.plugin_names():
        raise UnknownBackend(f"unknown backend {name!r}; see 'qmlops backends'")


def _refuse_secrets(client: Client, parameters: dict[str, Any]) -> None:
    """A parameter holding a secret (a stored credential's, or a provider's from the
    environment) would land in the output notebook, the ledger and MLflow: refuse it."""
    from ..vault import redaction

    redaction.register_environment()
    strings = [(k, v) for k, v in parameters.items() if isinstance(v, str)]
    if not strings:
        return
    try:
        vault = client.vault
        for info in vault.list():
            redaction.register(*vault.get(info.alias).fields.values())
    except Exception:  # no vault key here: nothing stored can be read, so none can leak
        log.debug("stored credentials not compared with pipeline parameters", exc_info=True)
    for name, value in strings:
        if redaction.redact(value) != value:
            raise InvalidRequest(
                f"parameter {name!r} holds a secret; store it with 'qmlops creds set' and pass "
                "its alias with --credential"
            )


# -- running -----------------------------------------------------------------------------------


def run_pipeline(
    client: Client,
    request: PipelineRequest,
    *,
    say: Callable[[str], None] | None = None,
) -> PipelineRun:
    """Run the notebook to the end (or its timeout, or a park) and return the run; raise
    :class:`PipelineRunFailed` (with ``.run``) when it did not complete. A run that parked
    (``qmlops_jupyter.pipeline.wait_for``) is returned PARKED: an engine host resumes it.

    The first attempt's kernel is started as soon as the arguments are known to be sane: it
    boots (a second or so) while the notebook is read and checked, the ledger opened and
    papermill imported here. A check that fails then stops it; nothing is written."""
    from ..ledger.store import new_job_id

    notebook, parameters = _check_arguments(request)
    say = say or (lambda message: None)
    run_id = request.run_id or new_job_id()
    parameters[RUN_ID_PARAMETER] = run_id
    folder = runs_folder(client) / run_id
    kernel_spec = _kernel(notebook)
    env = _kernel_env(client, notebook, run_id, parameters, request.experiment, folder)
    env.update(request.kernel_environment)
    cancel = threading.Event()
    with _cancellable(run_id, cancel, request.links.get("sweep_id")):
        kernel = Kernel.start(kernel_spec["kernel_name"], env, str(notebook.parent))
        try:
            _check_notebook(request.notebook, notebook)
            _check_with_client(
                client, request, {k: v for k, v in parameters.items() if k != RUN_ID_PARAMETER}
            )
            run = _begin(client, request, notebook, parameters, run_id, folder)
        except BaseException:
            kernel.kill()
            raise
        started = time.monotonic()
        deadline = None if request.timeout is None else started + request.timeout
        part = Part(source=str(notebook), cell_offset=0, number=1, first_attempt=1)
        return drive(
            client,
            run,
            part,
            folder=folder,
            deadline=deadline,
            retry_delay=request.retry_delay,
            say=say,
            mlflow_experiment=request.experiment,
            kernel=kernel,
            cancel=cancel,
            kernel_environment=request.kernel_environment,
        )


def _begin(
    client: Client,
    request: PipelineRequest,
    notebook: Path,
    parameters: dict[str, Any],
    run_id: str,
    folder: Path,
) -> PipelineRun:
    """The run's row, RUNNING (a new one, or the QUEUED one named by ``request.run_id``)."""
    cfg = client.tracking.config
    experiment = request.experiment or (cfg.experiment if cfg.enabled else None)
    from .store import PipelineRuns

    store = PipelineRuns(client.ledger)
    fields: dict[str, Any] = {}
    if request.run_id is not None:
        run = store.get(request.run_id, client.owner)
        if run.id != run_id:  # a prefix: the kernel was started with the wrong id
            raise InvalidRequest(f"give the whole pipeline run id, not {request.run_id!r}")
        if run.state is not S.QUEUED:
            raise InvalidRequest(f"pipeline run {run.id} is {run.state.value}, not QUEUED")
        fields = {
            "parameters": parameters,
            "max_retries": request.retries,
            "timeout": request.timeout,
            "experiment": experiment,
        }
    else:
        store.create(
            run_id=run_id,
            owner=client.owner,
            notebook=str(notebook),
            parameters=parameters,
            max_retries=request.retries,
            timeout=request.timeout,
            experiment=experiment,
            **request.links,
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return store.update(
        run_id,
        **fields,
        state=S.RUNNING,
        started_at=client.ledger.clock(),
        runner_host=socket.gethostname()[:255],
        runner_pid=os.getpid(),
        heartbeat_at=client.ledger.clock(),
        attempts=1,
    )


@dataclass
class Part:
    """What one part of a run executes: the notebook from its top (part 1), or, after a park,
    a notebook of the cells from the park cell on, behind a cell that restores the state."""

    #: A path, or a notebook node.
    source: Any
    #: The input notebook's index of the part's first counted cell.
    cell_offset: int
    #: 1 for the first part, 2 after the first park ...
    number: int
    #: The attempt number the part begins with (a resumed part continues its attempt).
    first_attempt: int

    def stem(self, attempt: int) -> str:
        return f"attempt-{attempt}" if self.number == 1 else f"attempt-{attempt}.part-{self.number}"


def drive(
    client: Client,
    run: PipelineRun,
    part: Part,
    *,
    folder: Path,
    deadline: float | None,
    retry_delay: float,
    say: Callable[[str], None],
    mlflow_experiment: str | None = None,
    kernel: Kernel | None = None,
    cancel: threading.Event | None = None,
    kernel_environment: dict[str, str] | None = None,
) -> PipelineRun:
    """Run a RUNNING run's part, with retries, and end it (or park it); see
    :func:`run_pipeline`. Used by the first part and by each resumed one.
    ``mlflow_experiment``: set as ``MLFLOW_EXPERIMENT_NAME`` in the kernel's environment.
    ``cancel``: set, it stops the run (CANCELLED). ``kernel_environment``: added to each
    kernel's environment."""
    from .store import PipelineRuns

    store = PipelineRuns(client.ledger)
    notebook = Path(run.notebook)
    env = _kernel_env(client, notebook, run.id, run.parameters, mlflow_experiment, folder)
    env.update(kernel_environment or {})
    spec_base = {
        "input": part.source,
        "parameters": run.parameters,
        **_kernel(notebook),
        "cwd": str(notebook.parent),
        "cell_offset": part.cell_offset,
    }
    # MLflow loads in a child process beside the kernel, ready to write the run at its end.
    writer = _mlflow_writer(client, run) if client.tracking.config.enabled else None
    final: dict[str, Any] = {}
    output: Path | None = None
    attempt = part.first_attempt
    cancel = cancel or threading.Event()
    started = time.monotonic()
    with _cancel_on_signals(cancel), _cancellable(run.id, cancel), _heartbeat(store, run.id):
        try:
            while True:
                if attempt != run.attempts:
                    run = store.update(run.id, attempts=attempt)
                stem = part.stem(attempt)
                attempt_output = folder / f"{stem}.ipynb"
                outcome = execute(
                    {**spec_base, "output": str(attempt_output)},
                    env,
                    deadline,
                    cancel,
                    folder / f"{stem}.log",
                    kernel=kernel,
                )
                kernel = None  # a retry gets a fresh kernel
                if attempt_output.exists():
                    output = attempt_output
                final = _parked(outcome, folder) or outcome
                if final["status"] != "failed" or attempt > run.max_retries:
                    break
                delay = min(
                    retry_delay * 2 ** (attempt - 1) * (0.5 + random.random()),
                    MAX_RETRY_DELAY_SECONDS,
                )
                if deadline is not None and time.monotonic() + delay >= deadline:
                    break  # no time left for another attempt: the run fails as it stands
                say(
                    f"pipeline run {run.id}: attempt {attempt} failed ({_describe(outcome)}); "
                    f"retrying in {delay:.1f} s"
                )
                if cancel.wait(delay):
                    final = {"status": "cancelled"}
                    break
                attempt += 1
        except Exception as exc:  # the run must not stay RUNNING because of us
            if kernel is not None:
                kernel.kill()
            log.exception("pipeline run %s could not go on", run.id)
            final = {
                "status": "failed",
                "cell": None,
                "ename": exc.__class__.__name__,
                "evalue": str(exc),
            }
    if cancel.is_set() and final.get("status") != "completed":
        final = {"status": "cancelled"}
    running = time.monotonic() - started
    from . import parking

    if final["status"] == "parked":
        if writer is not None:
            writer.close()  # the resumed part writes the run
        return parking.record_park(client, run, part, final, output, folder, running, say)
    output_path = parking.final_output(folder, output, part)
    return conclude(client, run, final, output_path, say, running_seconds=running, writer=writer)


def conclude(
    client: Client,
    run: PipelineRun,
    final: dict[str, Any],
    output: Path | None,
    say: Callable[[str], None],
    *,
    running_seconds: float | None = None,
    writer: RunWriter | None = None,
) -> PipelineRun:
    """End the run as ``final`` says: the ledger, MLflow (once), the notification; raise
    :class:`PipelineRunFailed` unless it completed (KeyboardInterrupt when cancelled)."""
    from .store import PipelineRuns

    store = PipelineRuns(client.ledger)
    fields = _ending(final, run.timeout)
    if output is not None:
        fields["output_path"] = str(output)
    run = store.update(run.id, finished_at=client.ledger.clock(), runner_pid=None, **fields)
    if client.tracking.config.enabled:
        mlflow_run_id = _log_to_mlflow(client, run, say, writer)
        if mlflow_run_id is not None:
            run = store.update(run.id, mlflow_run_id=mlflow_run_id)
    _notify_end(client, run)
    from . import parking

    parking.forget_state(runs_folder(client) / run.id)
    if final["status"] == "cancelled":
        raise KeyboardInterrupt
    if run.state is not S.COMPLETED:
        raise PipelineRunFailed(failure_message(run), run)
    return run


def _parked(outcome: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    """The outcome of an attempt whose notebook parked: ``wait_for`` left its request in the
    run's folder and stopped the cell with :class:`~qmlops_jupyter.pipeline.PipelineParked`."""
    from ..pipeline import PARKED_ENAME
    from .parking import take_park_request

    if outcome.get("status") != "failed" or outcome.get("ename") != PARKED_ENAME:
        return None
    request = take_park_request(folder)
    if request is None or outcome.get("cell") is None:
        return None
    return {"status": "parked", "cell": outcome["cell"], **request}


@contextmanager
def _heartbeat(store: PipelineRuns, run_id: str) -> Iterator[None]:
    """While the run is RUNNING here, refresh its ``heartbeat_at`` every
    :data:`HEARTBEAT_SECONDS`: an engine host on another machine tells a dead runner by it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                store.beat(run_id)
            except Exception:  # a ledger briefly unreachable: the next beat will do
                log.debug("pipeline run %s: heartbeat not written", run_id, exc_info=True)

    thread = threading.Thread(target=beat, name="qmlops-pipeline-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _notify_end(client: Client, run: PipelineRun) -> None:
    """Tell whoever listens that the run ended (notifications never fail the run)."""
    try:
        from .notify import pipeline_run_ended

        pipeline_run_ended(client, run)
    except Exception:
        log.warning("pipeline run %s: its end was not notified", run.id, exc_info=True)


def failure_message(run: PipelineRun) -> str:
    if run.state is S.TIMED_OUT:
        return f"pipeline run {run.id} timed out: {run.error}"
    if run.error_cell is not None:
        return f"pipeline run {run.id} failed at cell {run.error_cell}: {run.error}"
    return f"pipeline run {run.id} {run.state.value.lower()}: {run.error}"


def _describe(outcome: dict[str, Any]) -> str:
    where = f"cell {outcome['cell']}: " if outcome.get("cell") is not None else ""
    return where + str(outcome.get("ename"))


def _ending(outcome: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    status = outcome["status"]
    if status == "completed":
        return {"state": S.COMPLETED}
    if status == "timed_out":
        return {
            "state": S.TIMED_OUT,
            "error": f"the run took longer than its timeout of {timeout:g} s; its kernel was "
            "stopped",
        }
    if status == "cancelled":
        return {"state": S.CANCELLED, "error": "stopped before it finished"}
    from ..vault.redaction import redact

    ename = str(outcome.get("ename") or "Error")
    evalue = one_line(outcome.get("evalue") or "")
    return {
        "state": S.FAILED,
        "error": redact(f"{ename}: {evalue}" if evalue else ename)[:4000],
        "error_cell": outcome.get("cell"),
        "error_ename": ename[:256],
    }


def _kernel_env(
    client: Client,
    notebook: Path,
    run_id: str,
    parameters: dict[str, Any],
    experiment: str | None,
    folder: Path | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    # Jobs the notebook submits go to the runner's ledger, whatever this process's environment.
    env.update(client.settings.environment())
    env["QMLOPS_NOTEBOOK_PATH"] = str(notebook)
    env["QMLOPS_PIPELINE_RUN_ID"] = run_id
    env["QMLOPS_PIPELINE_PARAMETERS"] = json.dumps(parameters, default=str)
    if folder is not None:
        # Where wait_for leaves a park request and the parked state.
        env["QMLOPS_PIPELINE_RUN_DIR"] = str(folder)
    env["PYTHONUNBUFFERED"] = "1"
    if experiment:
        # Jobs submitted in the notebook go to the run's experiment too.
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
    return env


def _kernel(notebook: Path) -> dict[str, str]:
    """The kernel and language papermill should use: the notebook's own, else Python (a
    notebook written by a program often names neither). Read as plain JSON: this runs before
    the notebook is checked (and nbformat imported), so a broken file gives the defaults."""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        meta = {}
    spec = meta.get("kernelspec") or {}
    language = spec.get("language") or (meta.get("language_info") or {}).get("name") or "python"
    return {"kernel_name": str(spec.get("name") or "python3"), "language": str(language)}


#: The runs this process is running (in any thread), by id: the event that cancels each, and
#: the sweep it is a point of. A sweep stopped here stops its points that start afterwards too.
_running: dict[str, tuple[threading.Event, str | None]] = {}
_stopped_sweeps: set[str] = set()
_running_changed = threading.Condition()


@contextmanager
def _cancellable(
    run_id: str, cancel: threading.Event, sweep_id: str | None = None
) -> Iterator[None]:
    with _running_changed:
        outer = _running.get(run_id)
        _running[run_id] = (cancel, sweep_id or (outer[1] if outer else None))
        if sweep_id in _stopped_sweeps:
            cancel.set()
    try:
        yield
    finally:
        with _running_changed:
            if outer is None:
                _running.pop(run_id, None)
                _running_changed.notify_all()


def cancel_sweep_here(sweep_id: str, *, wait: float = 0.0) -> list[str]:
    """Cancel the sweep's points this process is running (its in-process workers' threads),
    and any it starts from now on: each stops its kernel and ends CANCELLED, as on Ctrl-C.
    Waits up to ``wait`` seconds for them to end; returns the ids of those still running."""

    def mine() -> list[str]:
        return sorted(k for k, (_, sweep) in _running.items() if sweep == sweep_id)

    with _running_changed:
        _stopped_sweeps.add(sweep_id)
        for run_id in mine():
            _running[run_id][0].set()
        _running_changed.wait_for(lambda: not mine(), timeout=wait)
        return mine()


@contextmanager
def _cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """SIGTERM or Ctrl-C to the CLI stops the run: the watchdog stops the kernel (and all it
    started), and the run ends CANCELLED. Only the main thread can take signals; a run in a
    worker thread (a sweep's) is stopped by its host."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _cancel(signum: int, frame: Any) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, _cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- MLflow --------------------------------------------------------------------------------------


def _mlflow_store(client: Client, run: PipelineRun) -> TrackingConfig:
    """The tracking store, with the run's experiment."""
    from dataclasses import replace

    cfg = client.tracking.config
    return replace(cfg, experiment=run.experiment or cfg.experiment)


def _mlflow_writer(client: Client, run: PipelineRun) -> RunWriter:
    from ..tracking.writer import RunWriter

    return RunWriter.start(_mlflow_store(client, run))


def _log_to_mlflow(
    client: Client, run: PipelineRun, say: Callable[[str], None], writer: RunWriter | None = None
) -> str | None:
    """One MLflow run for the pipeline run: ``papermill.<name>`` params, tags naming the
    notebook and the run, duration and attempts as metrics, the executed notebook as the
    artifact ``output.ipynb``; written by ``writer`` (MLflow already loaded beside the kernel)
    or in place. A tracking store that cannot be reached is reported, not fatal: the run itself
    is in the ledger either way."""
    from ..tracking.mlflow_io import parameter_params, source_tags
    from ..tracking.writer import RunNotWritten, RunRecord, write_run
    from ..vault.redaction import redact

    store = writer.store if writer is not None else _mlflow_store(client, run)
    end_ms = int((run.finished_at or run.created_at).timestamp() * 1000)
    user_parameters = {k: v for k, v in run.parameters.items() if k != RUN_ID_PARAMETER}
    tags = source_tags({"user": run.owner, "notebook": run.notebook, "pipeline_run": run.id})
    tags["qmlops.pipeline_state"] = run.state.value
    if run.mlflow_parent_run_id:
        tags["mlflow.parentRunId"] = run.mlflow_parent_run_id
    if run.sweep_id:
        tags["qmlops.sweep"] = run.sweep_id
    if run.pipeline_id:
        tags["qmlops.pipeline"] = run.pipeline_id
    if run.error:
        tags["qmlops.pipeline_error"] = redact(run.error)[:5000]
    record = RunRecord(
        run_name=f"pipeline {Path(run.notebook).stem}",
        start_ms=int((run.started_at or run.created_at).timestamp() * 1000),
        end_ms=end_ms,
        status={S.COMPLETED: "FINISHED", S.CANCELLED: "KILLED"}.get(run.state, "FAILED"),
        tags=tags,
        params=parameter_params({"parameters": user_parameters}),
        metrics=[
            ("duration_s", float(run.duration_s or 0.0), 0, end_ms),
            ("attempts", float(run.attempts), 0, end_ms),
        ],
        files={"output.ipynb": run.output_path} if run.output_path else {},
    )
    try:
        return writer.write(record) if writer is not None else write_run(store, record)
    except RunNotWritten as exc:
        say(f"pipeline run {run.id}: not logged to MLflow at {store.safe_uri}: {exc}")
        log.warning("pipeline run %s not logged to MLflow: %s", run.id, exc)
        return None
