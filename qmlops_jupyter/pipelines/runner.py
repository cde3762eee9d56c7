"""``qmlops pipeline run``: execute a notebook with papermill, as a recorded pipeline run.

Each attempt runs papermill in a child process that leads a process group of its own; the
kernel papermill starts leads another (jupyter_client starts kernels in a new session). A run
over its timeout gets SIGTERM in both groups, then SIGKILL after a grace period, so neither the
child nor its kernel outlives the run.

Semantics:

* ``timeout`` bounds the whole run (every attempt and the waits between them). A timed-out run
  ends TIMED_OUT and is not retried: a notebook that ran out of time once would do it again.
* ``retries`` more attempts follow a failed one (a failing cell, a dead kernel), after an
  exponential backoff with jitter: ``retry_delay * 2**(k-1)`` times a factor in [0.5, 1.5).
* Every attempt's executed notebook is kept (``attempt-<k>.ipynb``); the last one is also
  ``output.ipynb``, all under ``QMLOPS_HOME/pipelines/runs/<run id>/``.
* The notebook gets its parameters from papermill (``-p`` values, ``backend``, ``credential``
  — the alias, never the secret — and ``qmlops_pipeline_run_id``); its kernel's environment
  has ``QMLOPS_PIPELINE_RUN_ID``, ``QMLOPS_NOTEBOOK_PATH`` and ``QMLOPS_PIPELINE_PARAMETERS``
  so jobs submitted inside link to the run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
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
from ..vault.redaction import redact
from .models import PipelineRun, PipelineRunState
from .store import PipelineRuns

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger("qmlops_jupyter.pipelines")

RUN_ID_PARAMETER = "qmlops_pipeline_run_id"
#: Seconds between SIGTERM and SIGKILL when a run is stopped.
KILL_GRACE_SECONDS = 3.0
#: The longest wait between two attempts.
MAX_RETRY_DELAY_SECONDS = 60.0

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
    try:
        import nbformat

        nbformat.read(str(notebook), as_version=4)
    except Exception as exc:
        raise InvalidRequest(
            f"{request.notebook}: not a readable notebook: {exc.__class__.__name__}"
        ) from None
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
    if request.backend is not None:
        _check_backend(client, request.backend)
    if request.credential is not None:
        from ..vault.store import check_alias

        # CredentialNotFound (exit 3) names the aliases there are; nothing is decrypted.
        client.vault.info(check_alias(request.credential))
    _refuse_secrets(client, parameters)
    return notebook.resolve(), parameters


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
    """Run the notebook to the end (or its timeout) and return the finished run; raise
    :class:`PipelineRunFailed` (with ``.run``) when it did not complete."""
    notebook, parameters = check_request(client, request)
    say = say or (lambda message: None)
    cfg = client.tracking.config
    experiment = request.experiment or (cfg.experiment if cfg.enabled else None)
    store = PipelineRuns(client.ledger)
    from ..ledger.store import new_job_id

    if request.run_id is not None:
        run = store.get(request.run_id, client.owner)
        if run.state is not S.QUEUED:
            raise InvalidRequest(f"pipeline run {run.id} is {run.state.value}, not QUEUED")
        parameters[RUN_ID_PARAMETER] = run.id
        run = store.update(
            run.id,
            parameters=parameters,
            max_retries=request.retries,
            timeout=request.timeout,
            experiment=experiment,
        )
    else:
        run_id = new_job_id()
        parameters[RUN_ID_PARAMETER] = run_id
        run = store.create(
            run_id=run_id,
            owner=client.owner,
            notebook=str(notebook),
            parameters=parameters,
            max_retries=request.retries,
            timeout=request.timeout,
            experiment=experiment,
            **request.links,
        )
    folder = runs_folder(client) / run.id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.monotonic()
    deadline = None if request.timeout is None else started + request.timeout
    run = store.update(
        run.id,
        state=S.RUNNING,
        started_at=client.ledger.clock(),
        runner_host=socket.gethostname()[:255],
        runner_pid=os.getpid(),
        heartbeat_at=client.ledger.clock(),
    )
    env = _kernel_env(notebook, run.id, parameters, request.experiment)
    spec_base = {
        "input": str(notebook),
        "parameters": parameters,
        **_kernel(notebook),
        "cwd": str(notebook.parent),
    }
    final: dict[str, Any] = {}
    output: Path | None = None
    attempt = 0
    with _sigterm_as_interrupt():
        try:
            while True:
                attempt += 1
                store.update(run.id, attempts=attempt)
                attempt_output = folder / f"attempt-{attempt}.ipynb"
                outcome = _attempt(
                    folder, attempt, {**spec_base, "output": str(attempt_output)}, env, deadline
                )
                if attempt_output.exists():
                    output = attempt_output
                final = outcome
                if outcome["status"] != "failed" or attempt > request.retries:
                    break
                delay = min(
                    request.retry_delay * 2 ** (attempt - 1) * (0.5 + random.random()),
                    MAX_RETRY_DELAY_SECONDS,
                )
                if deadline is not None and time.monotonic() + delay >= deadline:
                    break  # no time left for another attempt: the run fails as it stands
                say(
                    f"pipeline run {run.id}: attempt {attempt} failed ({_describe(outcome)}); "
                    f"retrying in {delay:.1f} s"
                )
                time.sleep(delay)
        except KeyboardInterrupt:
            final = {"status": "cancelled"}
        except Exception as exc:  # the run must not stay RUNNING because of us
            log.exception("pipeline run %s could not go on", run.id)
            final = {
                "status": "failed",
                "cell": None,
                "ename": exc.__class__.__name__,
                "evalue": str(exc),
            }
    fields = _ending(final, request.timeout)
    if output is not None:
        shutil.copyfile(output, folder / "output.ipynb")
        fields["output_path"] = str(folder / "output.ipynb")
    run = store.update(run.id, finished_at=client.ledger.clock(), runner_pid=None, **fields)
    if cfg.enabled:
        mlflow_run_id = _log_to_mlflow(client, run, say)
        if mlflow_run_id is not None:
            run = store.update(run.id, mlflow_run_id=mlflow_run_id)
    _notify_end(client, run)
    if final["status"] == "cancelled":
        raise KeyboardInterrupt
    if run.state is not S.COMPLETED:
        raise PipelineRunFailed(failure_message(run), run)
    return run


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
    ename = str(outcome.get("ename") or "Error")
    evalue = one_line(outcome.get("evalue") or "")
    return {
        "state": S.FAILED,
        "error": redact(f"{ename}: {evalue}" if evalue else ename)[:4000],
        "error_cell": outcome.get("cell"),
        "error_ename": ename[:256],
    }


def _kernel_env(
    notebook: Path, run_id: str, parameters: dict[str, Any], experiment: str | None
) -> dict[str, str]:
    env = dict(os.environ)
    env["QMLOPS_NOTEBOOK_PATH"] = str(notebook)
    env["QMLOPS_PIPELINE_RUN_ID"] = run_id
    env["QMLOPS_PIPELINE_PARAMETERS"] = json.dumps(parameters, default=str)
    env["PYTHONUNBUFFERED"] = "1"
    if experiment:
        # Jobs submitted in the notebook go to the run's experiment too.
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
    return env


def _kernel(notebook: Path) -> dict[str, str]:
    """The kernel and language papermill should use: the notebook's own, else Python (a
    notebook written by a program often names neither)."""
    import nbformat

    meta = nbformat.read(str(notebook), as_version=4).metadata
    spec = meta.get("kernelspec", {})
    language = spec.get("language") or meta.get("language_info", {}).get("name") or "python"
    return {"kernel_name": str(spec.get("name") or "python3"), "language": str(language)}


def _attempt(
    folder: Path, attempt: int, spec: dict[str, Any], env: dict[str, str], deadline: float | None
) -> dict[str, Any]:
    """Run one attempt in a child process; its outcome (``status`` completed, failed or
    timed_out, and for a failure ``cell``, ``ename``, ``evalue``)."""
    result = folder / f"attempt-{attempt}.result.json"
    spec_file = folder / f"attempt-{attempt}.spec.json"
    spec_file.write_text(json.dumps({**spec, "result": str(result)}, default=str))
    with open(folder / f"attempt-{attempt}.log", "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "qmlops_jupyter.pipelines.execute", str(spec_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            child.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            stop_process_tree(child)
            return {"status": "timed_out"}
        except BaseException:
            stop_process_tree(child)
            raise
    try:
        outcome: dict[str, Any] = json.loads(result.read_text())
    except (OSError, ValueError):
        outcome = {
            "status": "failed",
            "cell": None,
            "ename": "PipelineError",
            "evalue": f"the notebook runner exited with code {child.returncode}; see "
            f"{folder / f'attempt-{attempt}.log'}",
        }
    finally:
        spec_file.unlink(missing_ok=True)
        result.unlink(missing_ok=True)
    return outcome


def stop_process_tree(child: subprocess.Popen[bytes], grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the child's process group and the group of each of its descendants (the kernel
    leads its own), then SIGKILL whatever is left after ``grace`` seconds."""
    pids = [child.pid, *_descendants(child.pid)]
    groups = set()
    for pid in pids:
        with suppress(OSError):
            groups.add(os.getpgid(pid))
    _signal_all(groups, pids, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if child.poll() is not None and not any(_alive(p) for p in pids[1:]):
            break
        time.sleep(0.05)
    # Only what is still there: a pid that died during the grace period may be reused.
    left = [p for p in pids[1:] if _alive(p)]
    _signal_all(groups, [child.pid, *left], signal.SIGKILL)
    child.wait()


def _signal_all(groups: set[int], pids: list[int], sig: int) -> None:
    for group in groups:
        if group == os.getpgrp():
            continue  # never our own group
        with suppress(OSError):
            os.killpg(group, sig)
    for pid in pids:
        with suppress(OSError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is gone for our purposes (its parent reaps it)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the CLI stops the run like Ctrl-C does (kernel killed, run CANCELLED)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- MLflow --------------------------------------------------------------------------------------


def _log_to_mlflow(client: Client, run: PipelineRun, say: Callable[[str], None]) -> str | None:
    """One MLflow run for the pipeline run: ``papermill.<name>`` params, tags naming the
    notebook and the run, duration and attempts as metrics, the executed notebook as the
    artifact ``output.ipynb``. A tracking store that cannot be reached is reported, not
    fatal: the run itself is in the ledger either way."""
    from ..tracking.mlflow_io import (
        Content,
        client_for,
        experiment_id,
        log_content,
        parameter_params,
        source_tags,
    )

    cfg = client.tracking.config
    experiment = run.experiment or cfg.experiment
    try:
        ml = client_for(cfg.uri)
        exp_id = experiment_id(ml, cfg.safe_uri, experiment, cfg.artifact_root)
        start_ms = int((run.started_at or run.created_at).timestamp() * 1000)
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
        made = ml.create_run(
            exp_id, start_time=start_ms, tags=tags, run_name=f"pipeline {Path(run.notebook).stem}"
        )
        mlflow_run_id = made.info.run_id
        content = Content(
            params=parameter_params({"parameters": user_parameters}),
            metrics=[
                ("duration_s", float(run.duration_s or 0.0), 0, end_ms),
                ("attempts", float(run.attempts), 0, end_ms),
            ],
        )
        if run.output_path and Path(run.output_path).is_file():
            content.files["output.ipynb"] = Path(run.output_path).read_bytes()
        log_content(ml, mlflow_run_id, content, made.info.artifact_uri)
        status = {S.COMPLETED: "FINISHED", S.CANCELLED: "KILLED"}.get(run.state, "FAILED")
        ml.set_terminated(mlflow_run_id, status, end_time=end_ms)
        return str(mlflow_run_id)
    except Exception as exc:
        from ..tracking.config import scrub

        message = redact(scrub(f"{exc.__class__.__name__}: {one_line(exc)}"))[:500]
        say(f"pipeline run {run.id}: not logged to MLflow at {cfg.safe_uri}: {message}")
        log.warning("pipeline run %s not logged to MLflow: %s", run.id, message)
        return None
