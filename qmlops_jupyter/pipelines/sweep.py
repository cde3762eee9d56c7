"""``qmlops pipeline sweep``: one pipeline run per point of a parameter grid, fanned out on Dask.

The grid is a YAML mapping of parameter name to a list of values (their cartesian product), and
optionally a ``points:`` list of explicit mappings, each one more point::

    shots: [500, 2000]
    layers: [1, 2, 3]
    points:
      - {shots: 8000, layers: 4}

Every point becomes a :class:`~qmlops_jupyter.pipelines.runner.PipelineRequest` and is checked
exactly as ``qmlops pipeline run`` checks one (names, the notebook, backend, credential alias,
no secret as a parameter) before anything is written or started.

Each point is one Dask task that calls :func:`~qmlops_jupyter.pipelines.runner.run_pipeline`
inside the worker, with a client of its own built from the settings the sweep passes along (so
a worker on another machine uses the same ledger and tracking store, not its own defaults).
By default the tasks run on a :class:`distributed.LocalCluster` in this process, of one
single-threaded worker per point, up to the number of CPUs (each point's kernel is a process of
its own, so the points run in parallel); with a scheduler address, on that cluster (a Dask
Gateway cluster is reached the same way: its scheduler address, or a client made by the
gateway).

Every point once: Dask runs a task again when the worker running it dies. Before it runs a
point, a task looks in the ledger for the point's earlier runs: a COMPLETED one is returned as
it is; a RUNNING one whose runner is gone (this machine, its process not alive; or another
machine, whose worker Dask has given up on) is ended FAILED ("its worker died"), whatever it
left running is stopped, and the point runs again. So the sweep ends with one run per point
that counts, and the ledger keeps the dead attempt for the record.

With tracking on, the sweep has one MLflow parent run: the grid as params (``grid.<name>``, the
values as JSON), the ``-p`` values as ``papermill.<name>``, and at the end how many points
completed and, for every metric the notebooks logged (``track()`` runs tagged with a point's
pipeline run), the metric per point (its step is the point's index) with its min, max and mean.
Each point's own MLflow run is nested under it (``mlflow.parentRunId``). The parent ends
FINISHED when every point completed, FAILED otherwise, KILLED when the sweep was interrupted.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import (
    BackendUnavailable,
    InvalidRequest,
    MissingBackendDependency,
    PipelineRunFailed,
    QmlopsError,
    one_line,
)
from ..vault.redaction import redact
from .execute import KILL_GRACE_SECONDS, _alive, stop_processes_of
from .models import PipelineRun, PipelineRunState
from .runner import RUN_ID_PARAMETER, PipelineRequest, check_request, failure_message

if TYPE_CHECKING:
    from ..client import Client
    from ..config import Settings

log = logging.getLogger("qmlops_jupyter.pipelines")

S = PipelineRunState

#: The grid key that lists explicit points (so it cannot be a swept parameter's name).
POINTS_KEY = "points"
#: A grid larger than this is almost certainly a mistake (and would flood the ledger).
MAX_POINTS = 10_000
#: Dask reruns a task that raised (a ledger that was briefly unreachable) this many times. A
#: task whose worker died is rerun by the scheduler itself, up to its ``allowed-failures``.
TASK_RETRIES = 2
#: Seconds to wait for a Dask scheduler given by address to answer.
SCHEDULER_TIMEOUT = 10.0
#: Environment variables a worker's task takes from the sweep (besides the settings), so a
#: worker on another machine tracks to the same place. QMLOPS_CRYPT_KEY never travels: a
#: remote worker that needs the vault must have its own (a local worker inherits it).
PASSED_ENVIRONMENT = (
    "QMLOPS_TRACKING",
    "QMLOPS_EXPERIMENT",
    "QMLOPS_CONFIG_FILE",
    "QMLOPS_LOG_FORMAT",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_DISABLE_TELEMETRY",
)
#: Metrics every pipeline run's MLflow run has: not the notebooks' own figures.
OWN_METRICS = frozenset({"duration_s", "attempts"})


# -- the grid -------------------------------------------------------------------------------------


@dataclass
class Grid:
    """The points of a grid file, in order: the cartesian product, then the explicit points."""

    path: str
    #: Swept parameter name -> its values, in the file's order.
    axes: dict[str, list[Any]]
    #: The explicit ``points:`` entries.
    explicit: list[dict[str, Any]]
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Every parameter name a point sets, axes first."""
        seen = dict.fromkeys(self.axes)
        for point in self.explicit:
            seen.update(dict.fromkeys(point))
        return list(seen)


def load_grid(path: str) -> Grid:
    """Read and check a grid file; a one-line :class:`InvalidRequest` (exit 2) names what is
    wrong with it."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequest(f"{path}: no such grid file")
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InvalidRequest(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"{path}: expected a mapping of parameter name to a list of values, not {_kind(data)}"
        )
    if not data:
        raise InvalidRequest(f"{path}: the grid has no parameters")
    axes: dict[str, list[Any]] = {}
    explicit: list[dict[str, Any]] = []
    for name, values in data.items():
        if name == POINTS_KEY:
            explicit = _explicit_points(path, values)
            continue
        _check_name(path, name)
        if not isinstance(values, list):
            raise InvalidRequest(
                f"{path}: {name!r} must be a list of values, not {_kind(values)} "
                f"(write [{_short(values)}] for a single value)"
            )
        if not values:
            raise InvalidRequest(f"{path}: {name!r} has an empty list of values")
        for value in values:
            _check_value(path, name, value)
        axes[name] = values
    size = math.prod(len(v) for v in axes.values()) if axes else 0
    if size + len(explicit) > MAX_POINTS:
        raise InvalidRequest(
            f"{path}: the grid has {size + len(explicit)} points; at most {MAX_POINTS} are allowed"
        )
    grid = Grid(path=path, axes=axes, explicit=explicit)
    names = list(axes)
    grid.points = [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())
    ]
    if not axes:
        grid.points = []
    grid.points += [dict(p) for p in explicit]
    seen: dict[str, int] = {}
    for index, point in enumerate(grid.points):
        key = json.dumps(point, sort_keys=True, default=str)
        if key in seen:
            raise InvalidRequest(
                f"{path}: point {index} ({_describe(point)}) repeats point {seen[key]}"
            )
        seen[key] = index
    return grid


def _explicit_points(path: str, values: Any) -> list[dict[str, Any]]:
    if not isinstance(values, list) or not values:
        raise InvalidRequest(
            f"{path}: {POINTS_KEY!r} must be a non-empty list of mappings (parameter name to "
            f"value), not {_kind(values) if values != [] else 'an empty list'}"
        )
    points = []
    for i, point in enumerate(values):
        if not isinstance(point, dict) or not point:
            raise InvalidRequest(
                f"{path}: {POINTS_KEY}[{i}] must be a mapping of parameter name to value, not "
                f"{_kind(point)}"
            )
        for name, value in point.items():
            _check_name(path, name)
            _check_value(path, name, value)
        points.append(dict(point))
    return points


def _check_name(path: str, name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidRequest(f"{path}: parameter name {name!r} is not a Python identifier")


#: What a notebook parameter can be: what JSON (the ledger, papermill) can carry.
_SCALARS = (str, int, float, bool, type(None))


def _check_value(path: str, name: str, value: Any) -> None:
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, list):
        for item in value:
            _check_value(path, name, item)
        return
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_value(path, name, item)
        return
    raise InvalidRequest(
        f"{path}: {name!r} has a value of type {type(value).__name__} ({_short(value)}), which "
        "a notebook parameter cannot be; quote it to pass it as text"
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    name = type(value).__name__
    article = "an" if name[0] in "aeiou" else "a"
    return f"{article} {name} ({_short(value)})"


def _short(value: Any) -> str:
    text = one_line(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(json.dumps(v, default=str))}" for k, v in point.items())


def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML's safe loader, but a key given twice is an error (PyYAML keeps the last)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                repeated = key in keys
                keys.add(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    return UniqueKeyLoader


class _LazyLoader:
    """Builds the loader class on first use (PyYAML is imported only then)."""

    _cls: type | None = None

    def __call__(self, stream: Any) -> Any:
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _unique_key_loader()
        return _LazyLoader._cls(stream)


_UniqueKeyLoader = _LazyLoader()


# -- the sweep as asked for ----------------------------------------------------------------------


@dataclass
class SweepRequest:
    notebook: str
    grid: str
    #: ``-p`` values, the same for every point.
    parameters: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    credential: str | None = None
    experiment: str | None = None
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 1.0
    #: Workers of the LocalCluster (default: one per point, at most one per CPU).
    workers: int | None = None
    #: A running Dask scheduler's address, instead of a LocalCluster.
    scheduler: str | None = None


class SweepResult(BaseModel):
    """What ``qmlops pipeline sweep --json`` prints."""

    sweep_id: str
    mlflow_parent_run_id: str | None
    #: One pipeline run per point, in the grid's order: its COMPLETED run when it has one,
    #: else its last.
    points: list[PipelineRun]

    @property
    def incomplete(self) -> list[PipelineRun]:
        return [r for r in self.points if r.state is not S.COMPLETED]


@dataclass
class SweepPlan:
    """A checked sweep: the requests of its points, ready to send to workers."""

    sweep_id: str
    notebook: Path
    grid: Grid
    requests: list[PipelineRequest]
    experiment: str | None


def plan_sweep(client: Client, request: SweepRequest) -> SweepPlan:
    """Check everything (the grid, and every point as ``pipeline run`` would check it) without
    writing anything; a typed error otherwise."""
    from importlib.util import find_spec

    from ..ledger.store import new_job_id

    if find_spec("distributed") is None:
        raise MissingBackendDependency(
            "sweeps need dask distributed, which is not installed; install it with: "
            "pip install 'qmlops-jupyter[dask]'"
        )
    if request.workers is not None and request.scheduler is not None:
        raise InvalidRequest("give --workers or --dask-scheduler, not both")
    if request.workers is not None and request.workers < 1:
        raise InvalidRequest(f"--workers must be 1 or more, not {request.workers}")
    if request.scheduler is not None and not request.scheduler.strip():
        raise InvalidRequest("--dask-scheduler must be a scheduler address")
    grid = load_grid(request.grid)
    for name in grid.names:
        if name in request.parameters:
            raise InvalidRequest(
                f"parameter {name!r} is both in the grid and given with -p; give it in one place"
            )
    if RUN_ID_PARAMETER in grid.names:
        raise InvalidRequest(f"{RUN_ID_PARAMETER} is set by the pipeline run itself")
    requests = []
    notebook: Path | None = None
    for point in grid.points:
        one = PipelineRequest(
            notebook=request.notebook,
            parameters={**request.parameters, **point},
            backend=request.backend,
            credential=request.credential,
            experiment=request.experiment,
            timeout=request.timeout,
            retries=request.retries,
            retry_delay=request.retry_delay,
        )
        notebook, _ = check_request(client, one)
        requests.append(replace(one, notebook=str(notebook)))
    assert notebook is not None  # a grid has at least one point
    cfg = client.tracking.config
    experiment = request.experiment or (cfg.experiment if cfg.enabled else None)
    return SweepPlan(new_job_id(), notebook, grid, requests, experiment)


def default_workers(points: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(points, cpus or 1))


def run_sweep(
    client: Client,
    request: SweepRequest,
    *,
    say: Callable[[str], None] | None = None,
    plan: SweepPlan | None = None,
    dask_client: Any = None,
) -> SweepResult:
    """Run every point of the grid on Dask and return the sweep's runs (whatever their
    states). Ctrl-C (or SIGTERM) stops the points still running, ends their runs CANCELLED and
    the MLflow parent KILLED, shuts the cluster down and raises :class:`KeyboardInterrupt`.

    ``dask_client``: a :class:`distributed.Client` of your own to run the points on (for
    example ``dask_gateway.Gateway().new_cluster().get_client()``, whose TLS credentials no
    address alone carries); it is used as is and left open."""
    say = say or (lambda message: None)
    plan = plan or plan_sweep(client, request)
    started = time.monotonic()
    settings = client.settings
    # Workers of the sweep's own cluster are threads of this process: they share its
    # environment. Workers elsewhere are given the variables that pick the ledger and tracking.
    in_process = dask_client is None and request.scheduler is None
    environment = (
        None if in_process else {name: os.environ.get(name) for name in PASSED_ENVIRONMENT}
    )
    total = len(plan.requests)
    results: dict[int, PipelineRun] = {}
    parent: str | None = None
    interrupted = False
    with _sigterm_as_interrupt():
        try:
            with _dask_client(request, total, say, dask_client) as dask:
                # The workers load what a point needs while the MLflow parent is made here.
                if not in_process:
                    with suppress(Exception):
                        dask.run(warm_up, client.tracking.config.enabled, wait=False)
                # Only now, with workers to run them, is anything written.
                parent = _start_parent(client, plan, request, say)
                links = {"sweep_id": plan.sweep_id, "mlflow_parent_run_id": parent}
                tuning = _one_thread_each() if in_process else {}
                futures = {
                    dask.submit(
                        run_point,
                        settings,
                        environment,
                        replace(
                            one,
                            links={**links, "sweep_point": index},
                            kernel_environment=tuning,
                        ),
                        key=f"qmlops-sweep-{plan.sweep_id}-point-{index}",
                        pure=False,
                        retries=TASK_RETRIES,
                    ): index
                    for index, one in enumerate(plan.requests)
                }
                try:
                    results = _collect(client, plan, futures, say)
                except BaseException:
                    # Points not started never start; running ones are stopped below.
                    with suppress(Exception):
                        dask.cancel(list(futures), force=True)
                    if in_process:  # a thread cannot be killed: its points stop themselves
                        _stop_points_here(plan.sweep_id)
                    raise
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            if parent is not None:
                _terminate_parent(client, parent, "FAILED")
            raise
    if interrupted:
        _cancel_unfinished(client, plan.sweep_id, local=in_process)
    runs = _final_runs(client, plan, results)
    result = SweepResult(sweep_id=plan.sweep_id, mlflow_parent_run_id=parent, points=runs)
    if parent is not None:
        _end_parent(client, parent, plan, result, time.monotonic() - started, interrupted, say)
    if interrupted:
        raise KeyboardInterrupt
    return result


def _collect(
    client: Client,
    plan: SweepPlan,
    futures: dict[Any, int],
    say: Callable[[str], None],
) -> dict[int, PipelineRun]:
    from distributed import as_completed

    total = len(futures)
    results: dict[int, PipelineRun] = {}
    for future in as_completed(list(futures)):
        index = futures[future]
        try:
            run = PipelineRun.model_validate(future.result())
        except Exception as exc:
            # The task gave up (its workers kept dying, or it kept raising): the point gets a
            # FAILED run saying why, so the sweep still has one run per point.
            run = _point_lost(client, plan, index, exc)
        results[index] = run
        took = "" if run.duration_s is None else f", {run.duration_s:.1f} s"
        say(
            f"sweep {plan.sweep_id}: point {index} {run.state.value} "
            f"(run {run.id}{took}) [{len(results)}/{total}]"
        )
    return results


@contextmanager
def _dask_client(
    request: SweepRequest, points: int, say: Callable[[str], None], given: Any = None
) -> Iterator[Any]:
    """A Dask client: the caller's, one on the given scheduler, or one on a LocalCluster of
    single-threaded workers in this process, shut down on the way out.

    The local workers are threads, not processes: a point's work is in its kernel, a process of
    its own, and the worker only drives papermill, so threads run points as much in parallel as
    processes would, without each worker process's start and first imports (seconds of CPU that
    the kernels need)."""
    if given is not None:
        yield given
        return
    import distributed

    if request.scheduler is not None:
        try:
            dask = distributed.Client(request.scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"no Dask scheduler answered at {request.scheduler}: {one_line(exc)}"
            ) from None
        try:
            yield dask
        finally:
            dask.close()
        return
    workers = request.workers or default_workers(points)
    say(f"starting a local Dask cluster of {workers} worker(s)")
    # The scheduler and workers talk in memory (Dask's inproc transport). No dashboard; the
    # scheduler and each worker still serve HTTP (/health, /metrics), which without an address
    # of ours would listen on every interface.
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        worker_dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    try:
        with distributed.Client(cluster) as dask:
            yield dask
    finally:
        cluster.close()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM stops the sweep like Ctrl-C (points stopped, runs CANCELLED, cluster shut)."""
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


# -- one point, in a worker ---------------------------------------------------------------------


async def warm_up(tracking: bool = False) -> None:
    """Import what running a point takes (papermill, the ledger, the runner; MLflow when
    tracking is on), once per worker process, before its first point arrives (a coroutine:
    ``Client.run`` without waiting takes no other kind)."""
    from importlib import import_module

    names = ["qmlops_jupyter.client", "qmlops_jupyter.pipelines.runner", "papermill"]
    if tracking:
        names.append("mlflow.tracking")
    for name in names:
        with suppress(Exception):
            import_module(name)


def _one_thread_each() -> dict[str, str]:
    """One thread for a point kernel's numeric libraries (OpenMP: Qiskit Aer; MKL, OpenBLAS:
    NumPy), as Dask's nanny sets for the worker processes it starts: the points are the
    parallelism, and N kernels each starting a thread per CPU would fight over the CPUs. A
    value the user set is kept."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {name: "1" for name in names if name not in os.environ}


def _stop_points_here(sweep_id: str) -> None:
    """Cancel the sweep's points running in this process's worker threads, and wait for them
    to stop their kernels and record it."""
    from .runner import cancel_sweep_here

    left = cancel_sweep_here(sweep_id, wait=KILL_GRACE_SECONDS + 10)
    if left:
        log.warning("sweep %s: points still stopping: %s", sweep_id, ", ".join(left))


def run_point(
    settings: Settings, environment: dict[str, str | None] | None, request: PipelineRequest
) -> dict[str, Any]:
    """The Dask task of one point: run it, unless it already completed (the task is a rerun
    after its worker died); returns the run as JSON (plain data travels across versions).
    ``environment``: variables to set while it runs (a worker elsewhere); None in the
    sweep's own process, whose environment is the sweep's."""
    from ..client import Client
    from .runner import run_pipeline

    with _environment(environment):
        client = Client(settings)
        try:
            sweep_id = request.links["sweep_id"]
            point = request.links["sweep_point"]
            done = settle_point(client, sweep_id, point)
            if done is not None:
                return done.model_dump(mode="json")
            try:
                # In a context of its own: the worker's carries the event loop of Dask's
                # thread, which papermill's and jupyter_client's run_sync would try to reuse.
                run = contextvars.Context().run(run_pipeline, client, request)
            except PipelineRunFailed as exc:
                run = exc.run
            except KeyboardInterrupt:  # cancelled by the sweep, which reads the ledger
                return {}
            return run.model_dump(mode="json")
        finally:
            client.close()


@contextmanager
def _environment(environment: dict[str, str | None] | None) -> Iterator[None]:
    """The sweep's tracking variables in this worker's environment while the point runs (the
    settings need none: the point's client is built from them, and its kernel is given them).
    Nothing changes for ``None``: threads of one process must not take turns at it."""
    if environment is None:
        yield
        return
    wanted = dict(environment)
    before = {name: os.environ.get(name) for name in wanted}
    try:
        for name, value in wanted.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def settle_point(
    client: Client, sweep_id: str, point: int, *, wait: bool = True
) -> PipelineRun | None:
    """Before a point runs: its COMPLETED run if it has one (returned as is); a run left
    RUNNING or QUEUED by a runner that is gone is ended FAILED, and whatever it left running
    is stopped. A run whose runner is alive on this machine (the same point, rerun while its
    first worker still works) is waited for."""
    from sqlalchemy import select, update

    from ..ledger.orm import PipelineRunRow
    from .store import _model

    table = PipelineRunRow.__table__
    here = socket.gethostname()[:255]
    while True:
        with client.ledger._read() as conn:
            rows = conn.execute(
                select(table)
                .where(
                    table.c.sweep_id == sweep_id,
                    table.c.sweep_point == point,
                    table.c.owner == client.owner,
                )
                .order_by(table.c.created_at, table.c.id)
            ).all()
        waiting = False
        for row in rows:
            state = S(row.state)
            if state is S.COMPLETED:
                return _model(row)
            if state is S.PARKED:
                return _model(row)  # an engine host resumes it; it is not ours to run
            if state.terminal:
                continue
            alive_here = row.runner_host == here and row.runner_pid and _alive(row.runner_pid)
            if alive_here and row.runner_pid != os.getpid():
                waiting = wait
                continue
            if row.runner_host in (None, here):
                stop_processes_of(row.id)
            if row.runner_host == here and row.runner_pid == os.getpid():
                why = "its task stopped before the run ended"  # rerun here after an error
            elif state is S.QUEUED:
                why = "its worker died before it started"
            elif row.runner_host in (None, here):
                why = "its worker died"
            else:
                why = f"its worker on {row.runner_host} was lost"
            with client.ledger._write() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id == row.id, table.c.state == row.state)
                    .values(
                        state=S.FAILED.value,
                        error=f"PipelineError: {why}; the point runs again",
                        error_ename="PipelineError",
                        finished_at=client.ledger.clock(),
                        runner_pid=None,
                    )
                )
            log.warning("sweep %s point %s: run %s ended FAILED: %s", sweep_id, point, row.id, why)
        if not waiting:
            return None
        time.sleep(1.0)


# -- after the tasks ------------------------------------------------------------------------------


def _sweep_rows(client: Client, sweep_id: str) -> list[Any]:
    from sqlalchemy import select

    from ..ledger.orm import PipelineRunRow

    table = PipelineRunRow.__table__
    with client.ledger._read() as conn:
        return list(
            conn.execute(
                select(table)
                .where(table.c.sweep_id == sweep_id, table.c.owner == client.owner)
                .order_by(table.c.sweep_point, table.c.created_at, table.c.id)
            ).all()
        )


def _point_lost(client: Client, plan: SweepPlan, index: int, exc: BaseException) -> PipelineRun:
    """A point whose task gave up: end its run left RUNNING (if any) and give the point a
    FAILED run that says why."""
    from .store import PipelineRuns

    settle_point(
        client, plan.sweep_id, index, wait=False
    )  # ends a run its dead worker left RUNNING
    reason = redact(f"{exc.__class__.__name__}: {one_line(exc)}")[:1000]
    if isinstance(exc, QmlopsError):
        reason = redact(str(exc))[:1000]
    store = PipelineRuns(client.ledger)
    one = plan.requests[index]
    parameters = {**dict(one.parameters)}
    for name, value in (("backend", one.backend), ("credential", one.credential)):
        if value is not None:
            parameters[name] = value
    run = store.create(
        owner=client.owner,
        notebook=str(plan.notebook),
        parameters=parameters,
        max_retries=one.retries,
        timeout=one.timeout,
        experiment=plan.experiment,
        sweep_id=plan.sweep_id,
        sweep_point=index,
    )
    now = client.ledger.clock()
    return store.update(
        run.id,
        state=S.FAILED,
        started_at=now,
        finished_at=now,
        error=f"PipelineError: the point could not run on Dask: {reason}",
        error_ename="PipelineError",
    )


def _cancel_unfinished(client: Client, sweep_id: str, *, local: bool) -> None:
    """After an interrupt: stop what the sweep's unfinished runs left running on this machine,
    and end those runs CANCELLED. ``local``: the workers were the sweep's own LocalCluster,
    shut down by now (a worker still exiting cannot finish its point)."""
    from sqlalchemy import update

    from ..ledger.orm import PipelineRunRow

    table = PipelineRunRow.__table__
    here = socket.gethostname()[:255]
    open_rows = [
        r
        for r in _sweep_rows(client, sweep_id)
        if S(r.state) in (S.QUEUED, S.RUNNING)
        # A point still running in a live worker (a scheduler's, which this sweep does not
        # shut down) runs to its end and records it.
        and r.runner_host in (None, here)
        and (local or not (r.runner_pid and _alive(r.runner_pid)))
    ]
    if not open_rows:
        return
    stop_processes_of(*(r.id for r in open_rows))
    now = client.ledger.clock()
    with client.ledger._write() as conn:
        for row in open_rows:
            conn.execute(
                update(table)
                .where(table.c.id == row.id, table.c.state == row.state)
                .values(
                    state=S.CANCELLED.value,
                    error="the sweep was stopped before this point finished",
                    finished_at=now,
                    runner_pid=None,
                )
            )


def _final_runs(
    client: Client, plan: SweepPlan, results: dict[int, PipelineRun]
) -> list[PipelineRun]:
    """One run per point: its COMPLETED run if it has one, else its last (read back from the
    ledger, which also knows points whose task never reported)."""
    from .store import _model

    by_point: dict[int, list[PipelineRun]] = {}
    for row in _sweep_rows(client, plan.sweep_id):
        by_point.setdefault(row.sweep_point, []).append(_model(row))
    runs = []
    for index in range(len(plan.requests)):
        found = by_point.get(index, [])
        completed = [r for r in found if r.state is S.COMPLETED]
        if completed:
            runs.append(completed[0])
        elif index in results:
            runs.append(next((r for r in found if r.id == results[index].id), results[index]))
        elif found:
            runs.append(found[-1])
    return runs


# -- MLflow -------------------------------------------------------------------------------------


def _start_parent(
    client: Client, plan: SweepPlan, request: SweepRequest, say: Callable[[str], None]
) -> str | None:
    """The sweep's MLflow parent run (None with tracking off, or when the store cannot be
    reached: the points are then logged on their own, not nested)."""
    cfg = client.tracking.config
    if not cfg.enabled:
        return None
    from ..tracking.mlflow_io import (
        Content,
        _param,
        client_for,
        experiment_id,
        log_content,
        source_tags,
    )

    try:
        ml = client_for(cfg.uri)
        exp_id = experiment_id(
            ml, cfg.safe_uri, plan.experiment or cfg.experiment, cfg.artifact_root
        )
        tags = source_tags({"user": client.owner, "notebook": str(plan.notebook)})
        tags["qmlops.sweep"] = plan.sweep_id
        tags["qmlops.sweep.grid_file"] = redact(str(Path(plan.grid.path).expanduser().resolve()))
        made = ml.create_run(
            exp_id,
            start_time=int(time.time() * 1000),
            tags=tags,
            run_name=f"sweep {plan.notebook.stem}",
        )
        fixed = dict(request.parameters)
        for name, value in (("backend", request.backend), ("credential", request.credential)):
            if value is not None:
                fixed[name] = value
        params = {
            f"grid.{k}"[:250]: _param(json.dumps(v, default=str)) for k, v in plan.grid.axes.items()
        }
        if plan.grid.explicit:
            params["grid.points"] = _param(json.dumps(plan.grid.explicit, default=str))
        params["sweep.points"] = str(len(plan.requests))
        params.update({f"papermill.{k}"[:250]: _param(v) for k, v in fixed.items()})
        log_content(ml, made.info.run_id, Content(params=params))
        return str(made.info.run_id)
    except Exception as exc:
        _not_logged(cfg, plan.sweep_id, exc, say)
        return None


def _end_parent(
    client: Client,
    parent: str,
    plan: SweepPlan,
    result: SweepResult,
    duration: float,
    interrupted: bool,
    say: Callable[[str], None],
) -> None:
    """Counts, the notebooks' metrics per point and summarised, and the parent's status."""
    cfg = client.tracking.config
    from ..tracking.mlflow_io import Content, client_for, log_content

    try:
        ml = client_for(cfg.uri)
        now = int(time.time() * 1000)
        completed = sum(1 for r in result.points if r.state is S.COMPLETED)
        metrics: list[tuple[str, float, int, int]] = [
            ("points", float(len(plan.requests)), 0, now),
            ("points_completed", float(completed), 0, now),
            ("points_not_completed", float(len(plan.requests) - completed), 0, now),
            ("duration_s", float(duration), 0, now),
        ]
        per_point = _notebook_metrics(ml, parent, result.points)
        names = sorted({k for figures in per_point.values() for k in figures})
        for name in names:
            values = []
            for index, figures in sorted(per_point.items()):
                if name in figures:
                    values.append(figures[name])
                    metrics.append((name, figures[name], index, now))
            metrics += [
                (f"{name}.min", min(values), 0, now),
                (f"{name}.max", max(values), 0, now),
                (f"{name}.mean", sum(values) / len(values), 0, now),
            ]
        log_content(ml, parent, Content(metrics=metrics))
        status = "KILLED" if interrupted else "FINISHED" if not result.incomplete else "FAILED"
        ml.set_terminated(parent, status, end_time=now)
    except Exception as exc:
        _not_logged(cfg, plan.sweep_id, exc, say)


def _notebook_metrics(ml: Any, parent: str, runs: list[PipelineRun]) -> dict[int, dict[str, float]]:
    """Point index -> the latest value of each metric the point's notebook logged (the MLflow
    runs tagged with its pipeline run, other than the pipeline run's own and the parent)."""
    experiment_id = ml.get_run(parent).info.experiment_id
    found: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.state is not S.COMPLETED or run.sweep_point is None:
            continue
        figures: dict[str, float] = {}
        mlruns = ml.search_runs(
            [experiment_id],
            filter_string=f"tags.`qmlops.pipeline_run` = '{run.id}'",
            max_results=200,
            order_by=["attributes.start_time ASC"],
        )
        for mlrun in mlruns:
            if mlrun.info.run_id in (run.mlflow_run_id, parent):
                continue
            for name, value in mlrun.data.metrics.items():
                if name not in OWN_METRICS and math.isfinite(value):
                    figures[name] = float(value)
        if figures:
            found[run.sweep_point] = figures
    return found


def _terminate_parent(client: Client, parent: str, status: str) -> None:
    from ..tracking.mlflow_io import client_for

    with suppress(Exception):
        client_for(client.tracking.config.uri).set_terminated(parent, status)


def _not_logged(cfg: Any, sweep_id: str, exc: BaseException, say: Callable[[str], None]) -> None:
    from ..tracking.config import scrub

    message = redact(scrub(f"{exc.__class__.__name__}: {one_line(exc)}"))[:500]
    say(f"sweep {sweep_id}: not logged to MLflow at {cfg.safe_uri}: {message}")
    log.warning("sweep %s not logged to MLflow: %s", sweep_id, message)


def sweep_failure_message(result: SweepResult) -> str:
    """One line for a sweep with points that did not complete (the first one's error)."""
    bad = result.incomplete
    first = bad[0]
    return (
        f"sweep {result.sweep_id}: {len(bad)} of {len(result.points)} points did not complete; "
        f"point {first.sweep_point}: {failure_message(first)}"
    )
