"""Saved pipelines and their cron schedules, and the engine host's duty that starts due runs.

A schedule keeps ``next_due_at`` (UTC). Each tick an engine host reads the schedules that are
due (one indexed SELECT), decides which due time to run by the schedule's catch-up policy, and
in one transaction advances the schedule with a compare-and-set UPDATE (``WHERE next_due_at =
:seen``) and inserts the run with ``scheduled_for`` set. Only the host whose UPDATE matched goes
on, and the UNIQUE ``(pipeline_id, scheduled_for)`` of ``pipeline_runs`` makes a second run for
one due time impossible whatever the number of engine hosts: one run per (pipeline, time).

Catch-up, after time with no engine host running (or a tick that came late):

* ``once``: run the latest due time that was missed, if it is not older than ``stale_after``
  seconds; never the ones before it.
* ``skip``: run a due time only if it is seen on time (within ``min(ON_TIME_SLACK,
  stale_after)`` seconds of it); a missed one waits for the next due time.

The engine host that inserted the run starts its runner, ``qmlops pipeline run-queued RUN_ID``,
in a process of its own (:func:`~qmlops_jupyter.pipelines.host.launch`), which outlives the
engine host; the run's lease (``lease_until``) says by when the runner must have begun, or
:func:`~qmlops_jupyter.pipelines.watch.end_dead_runs` ends the run FAILED.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, false, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidRequest, PipelineExists, PipelineNotFound
from ..ledger.orm import PipelineRow, ScheduleRow
from ..ledger.store import new_job_id
from .models import CatchUp, Pipeline, PipelineRun, PipelineRunState, Schedule
from .store import PipelineRuns, _model, runs

if TYPE_CHECKING:
    from ..config import Settings
    from ..ledger import Ledger
    from .host import PipelineHost

log = logging.getLogger("qmlops_jupyter.pipelines")

pipelines_t = PipelineRow.__table__
schedules_t = ScheduleRow.__table__

#: Under ``skip``, a due time seen later than this (seconds) counts as missed.
ON_TIME_SLACK = 60.0
#: Seconds a launched runner has to move its QUEUED run to RUNNING before the run is failed.
LAUNCH_GRACE = 120.0
#: The hidden CLI command that runs a QUEUED run of a saved pipeline.
RUN_QUEUED = ("pipeline", "run-queued")
#: Missed due times counted for the log, at most (a per-second cron after a day's downtime
#: must not cost a tick 86 400 iterations).
MAX_COUNTED = 1000


# -- cron ----------------------------------------------------------------------------------------


def check_timezone(timezone: str) -> Any:
    """The ``ZoneInfo`` of an IANA name, or InvalidRequest naming it."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not timezone or timezone != timezone.strip():
            raise ValueError
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidRequest(
            f"unknown time zone {timezone!r} (an IANA name such as 'UTC' or 'Europe/Paris')"
        ) from None


def check_cron(cron: str, timezone: str = "UTC") -> str:
    """The cron expression, normalised to single spaces, or InvalidRequest naming it. Five
    fields (minute hour day month weekday); a sixth is seconds, a seventh the year."""
    from croniter import CroniterError, croniter

    tz = check_timezone(timezone)
    expr = " ".join(str(cron or "").split())
    try:
        croniter(expr, datetime.now(tz)).get_next(datetime)
    except (CroniterError, ValueError, TypeError, KeyError) as exc:
        reason = str(exc).split("\n")[0] or exc.__class__.__name__
        raise InvalidRequest(f"invalid cron expression {cron!r}: {reason}") from None
    return expr


def next_due(cron: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The ``count`` due times strictly after ``after``, in UTC."""
    from datetime import UTC

    from croniter import croniter

    it = croniter(cron, after.astimezone(check_timezone(timezone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def latest_due(cron: str, timezone: str, now: datetime) -> datetime:
    """The latest due time at or before ``now``, in UTC."""
    from datetime import UTC

    from croniter import croniter

    # croniter's get_prev excludes its start; a microsecond later includes ``now`` itself.
    start = (now + timedelta(microseconds=1)).astimezone(check_timezone(timezone))
    return croniter(cron, start).get_prev(datetime).astimezone(UTC)


def _count_between(cron: str, timezone: str, first: datetime, last: datetime) -> int:
    """How many due times lie in [first, last] (at most MAX_COUNTED)."""
    from croniter import croniter

    if last < first:
        return 0
    it = croniter(cron, (first - timedelta(microseconds=1)).astimezone(check_timezone(timezone)))
    count = 0
    while count < MAX_COUNTED and it.get_next(datetime) <= last:
        count += 1
    return count


def choose_due_time(schedule: Schedule, now: datetime) -> tuple[datetime | None, int]:
    """The due time to run now under the schedule's catch-up policy (None: none of them), and
    how many due times there were since ``next_due_at``."""
    assert schedule.next_due_at is not None
    latest = latest_due(schedule.cron, schedule.timezone, now)
    due = _count_between(schedule.cron, schedule.timezone, schedule.next_due_at, latest)
    age = (now - latest).total_seconds()
    window = schedule.stale_after
    if schedule.catch_up is CatchUp.SKIP:
        window = min(ON_TIME_SLACK, schedule.stale_after)
    return (latest if age <= window else None), due


# -- the store -----------------------------------------------------------------------------------


class Pipelines:
    """Saved pipelines and their schedules, of every owner in one ledger; each call names the
    owner and sees only that owner's pipelines."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def create(
        self,
        *,
        owner: str,
        notebook: str,
        cron: str,
        name: str | None = None,
        parameters: dict[str, Any] | None = None,
        experiment: str | None = None,
        timeout: float | None = None,
        retries: int = 0,
        timezone: str = "UTC",
        catch_up: CatchUp | str = CatchUp.ONCE,
        stale_after: float = 86400.0,
    ) -> Pipeline:
        """Save a pipeline with its schedule (both or neither). The notebook and parameters are
        taken as given: check them first (:func:`~qmlops_jupyter.pipelines.runner.check_request`
        refuses a missing notebook and a parameter holding a secret)."""
        cron = check_cron(cron, timezone)
        try:
            catch_up = CatchUp(str(catch_up).lower())
        except ValueError:
            raise InvalidRequest(
                f"catch-up must be 'once' or 'skip', not {str(catch_up)!r}"
            ) from None
        if not stale_after >= 0:
            raise InvalidRequest(f"stale-after must be 0 or more seconds, not {stale_after:g}")
        if retries < 0:
            raise InvalidRequest(f"retries must be 0 or more, not {retries}")
        if timeout is not None and not timeout > 0:
            raise InvalidRequest(f"timeout must be more than 0 seconds, not {timeout:g}")
        if not str(notebook or "").endswith(".ipynb"):
            raise InvalidRequest(f"{notebook}: not a notebook (expected a .ipynb file)")
        name = (name if name is not None else Path(notebook).stem).strip()
        if not name or len(name) > 128 or any(c.isspace() and c != " " for c in name):
            raise InvalidRequest(f"pipeline name {name!r} must be 1 to 128 characters on one line")
        now = self.ledger.clock()
        pipeline_id, schedule_id = new_job_id(), new_job_id()
        first = next_due(cron, timezone, now)[0]
        try:
            with self.ledger._write() as conn:
                taken = conn.execute(
                    select(pipelines_t.c.id).where(
                        pipelines_t.c.owner == owner, pipelines_t.c.name == name
                    )
                ).first()
                if taken is not None:
                    raise _name_taken(name)
                conn.execute(
                    insert(pipelines_t).values(
                        id=pipeline_id,
                        owner=owner,
                        name=name,
                        notebook=str(notebook),
                        parameters=dict(parameters or {}),
                        experiment=experiment,
                        timeout=timeout,
                        retries=retries,
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    insert(schedules_t).values(
                        id=schedule_id,
                        pipeline_id=pipeline_id,
                        owner=owner,
                        cron=cron,
                        timezone=timezone,
                        paused=False,
                        catch_up=catch_up.value,
                        stale_after=float(stale_after),
                        next_due_at=first,
                        last_scheduled_for=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:  # the same name saved at the same moment elsewhere
            raise _name_taken(name) from None
        log.info(
            "pipeline %s (%s) scheduled %r %s; next due %s",
            name,
            pipeline_id,
            cron,
            timezone,
            first.isoformat(),
            extra={"event": "pipeline_scheduled", "actor": owner},
        )
        return self.get(pipeline_id, owner)

    def list(self, owner: str) -> list[Pipeline]:
        """This owner's pipelines by name, each with its newest run."""
        with self.ledger._read() as conn:
            rows = conn.execute(
                _joined().where(pipelines_t.c.owner == owner).order_by(pipelines_t.c.name)
            ).all()
            return [self._with_last_run(conn, row) for row in rows]

    def get(self, name_or_id: str, owner: str) -> Pipeline:
        """By id, by name, or by a unique prefix of its id."""
        key = (name_or_id or "").strip()
        with self.ledger._read() as conn:
            row = _find(conn, key, owner)
            if row is None:
                raise PipelineNotFound(f"no pipeline {key!r}")
            return self._with_last_run(conn, row)

    def find(self, name_or_id: str, owner: str) -> Pipeline | None:
        """:meth:`get`, or None when nothing matches."""
        try:
            return self.get(name_or_id, owner)
        except PipelineNotFound:
            return None

    def pause(self, name_or_id: str, owner: str) -> Pipeline:
        """No more runs until :meth:`resume` (a run already started goes on)."""
        pipeline = self.get(name_or_id, owner)
        with self.ledger._write() as conn:
            conn.execute(
                update(schedules_t)
                .where(schedules_t.c.pipeline_id == pipeline.id)
                .values(paused=True, next_due_at=None, updated_at=self.ledger.clock())
            )
        log.info(
            "pipeline %s paused",
            pipeline.name,
            extra={"event": "pipeline_paused", "actor": owner},
        )
        return self.get(pipeline.id, owner)

    def resume(self, name_or_id: str, owner: str) -> Pipeline:
        """Due again from now on: the due times that passed while paused are not run."""
        pipeline = self.get(name_or_id, owner)
        if pipeline.schedule is None:
            raise InvalidRequest(f"pipeline {pipeline.name!r} has no schedule")
        now = self.ledger.clock()
        first = next_due(pipeline.schedule.cron, pipeline.schedule.timezone, now)[0]
        with self.ledger._write() as conn:
            conn.execute(
                update(schedules_t)
                .where(schedules_t.c.pipeline_id == pipeline.id)
                .values(paused=False, next_due_at=first, updated_at=now)
            )
        log.info(
            "pipeline %s resumed; next due %s",
            pipeline.name,
            first.isoformat(),
            extra={"event": "pipeline_resumed", "actor": owner},
        )
        return self.get(pipeline.id, owner)

    def delete(self, name_or_id: str, owner: str) -> Pipeline:
        """Delete the pipeline and its schedule; its past runs stay in ``pipeline_runs``."""
        pipeline = self.get(name_or_id, owner)
        with self.ledger._write() as conn:
            conn.execute(delete(schedules_t).where(schedules_t.c.pipeline_id == pipeline.id))
            conn.execute(
                delete(pipelines_t).where(
                    pipelines_t.c.id == pipeline.id, pipelines_t.c.owner == owner
                )
            )
        log.info(
            "pipeline %s deleted",
            pipeline.name,
            extra={"event": "pipeline_deleted", "actor": owner},
        )
        return pipeline

    def _with_last_run(self, conn: Any, row: Any) -> Pipeline:
        last = conn.execute(
            select(runs)
            .where(runs.c.pipeline_id == row.id)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
        return _pipeline(row, None if last is None else _model(last))


def _name_taken(name: str) -> PipelineExists:
    return PipelineExists(
        f"a pipeline named {name!r} already exists; give another --name, or delete it first"
    )


_SCHEDULE_COLUMNS = {
    "schedule_id": schedules_t.c.id,
    "cron": schedules_t.c.cron,
    "timezone": schedules_t.c.timezone,
    "paused": schedules_t.c.paused,
    "catch_up": schedules_t.c.catch_up,
    "stale_after": schedules_t.c.stale_after,
    "next_due_at": schedules_t.c.next_due_at,
    "last_scheduled_for": schedules_t.c.last_scheduled_for,
}


def _joined() -> Any:
    return select(
        pipelines_t, *(column.label(label) for label, column in _SCHEDULE_COLUMNS.items())
    ).select_from(pipelines_t.outerjoin(schedules_t, schedules_t.c.pipeline_id == pipelines_t.c.id))


def _find(conn: Any, key: str, owner: str) -> Any:
    mine = pipelines_t.c.owner == owner
    row = conn.execute(_joined().where(mine, pipelines_t.c.id == key)).first()
    if row is None:
        row = conn.execute(_joined().where(mine, pipelines_t.c.name == key)).first()
    if row is None and key and all(c in "0123456789abcdef" for c in key):
        found = conn.execute(_joined().where(mine, pipelines_t.c.id.startswith(key)).limit(2)).all()
        row = found[0] if len(found) == 1 else None
    return row


def _pipeline(row: Any, last_run: PipelineRun | None) -> Pipeline:
    m = row._mapping
    schedule = None
    if m["schedule_id"] is not None:
        schedule = Schedule(
            id=m["schedule_id"],
            cron=m["cron"],
            timezone=m["timezone"],
            paused=bool(m["paused"]),
            catch_up=CatchUp(m["catch_up"]),
            stale_after=m["stale_after"],
            next_due_at=m["next_due_at"],
            last_scheduled_for=m["last_scheduled_for"],
        )
    return Pipeline(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        notebook=m["notebook"],
        parameters=m["parameters"] or {},
        experiment=m["experiment"],
        timeout=m["timeout"],
        retries=m["retries"] or 0,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        schedule=schedule,
        last_run=last_run,
    )


def list_runs(
    ledger: Ledger,
    owner: str,
    *,
    pipeline: str | None = None,
    state: PipelineRunState | str | None = None,
    limit: int = 20,
) -> list[PipelineRun]:
    """This owner's runs, newest first, of one pipeline (name or id) and/or in one state."""
    query = select(runs).where(runs.c.owner == owner)
    if pipeline is not None:
        query = query.where(runs.c.pipeline_id == Pipelines(ledger).get(pipeline, owner).id)
    if state is not None:
        try:
            state = PipelineRunState(str(state).upper())
        except ValueError:
            names = ", ".join(s.value for s in PipelineRunState)
            raise InvalidRequest(f"unknown run state {str(state)!r} (one of {names})") from None
        query = query.where(runs.c.state == state.value)
    with ledger._read() as conn:
        rows = conn.execute(
            query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        ).all()
    return [_model(r) for r in rows]


# -- starting runs -------------------------------------------------------------------------------


def runner_log(settings: Settings, run_id: str) -> Path:
    """Where a launched runner's own output goes (beside the run's notebooks)."""
    return settings.home / "pipelines" / "runs" / run_id / "runner.log"


def _new_run_values(pipeline: Pipeline, now: datetime, holder: str) -> dict[str, Any]:
    return {
        "id": new_job_id(),
        "owner": pipeline.owner,
        "notebook": pipeline.notebook,
        "parameters": dict(pipeline.parameters),
        "state": PipelineRunState.QUEUED.value,
        "attempts": 0,
        "max_retries": pipeline.retries,
        "timeout": pipeline.timeout,
        "experiment": pipeline.experiment,
        "created_at": now,
        "pipeline_id": pipeline.id,
        "lease_holder": holder[:255],
        "lease_until": now + timedelta(seconds=LAUNCH_GRACE),
    }


def run_now(ledger: Ledger, settings: Settings, owner: str, name_or_id: str) -> PipelineRun:
    """Start a run of a saved pipeline now, whatever its schedule: a QUEUED run linked to the
    pipeline, and its runner in a process of its own. Returns the QUEUED run."""
    from ..ledger.store import default_holder
    from .host import launch

    pipeline = Pipelines(ledger).get(name_or_id, owner)
    values = _new_run_values(pipeline, ledger.clock(), default_holder())
    with ledger._write() as conn:
        conn.execute(insert(runs).values(**values))
    child = launch(settings, owner, [*RUN_QUEUED, values["id"]], runner_log(settings, values["id"]))
    # Reap it when it ends (a caller such as the server outlives it by far): no zombie left.
    threading.Thread(target=child.wait, name=f"qmlops-run-{values['id']}", daemon=True).start()
    log.info(
        "pipeline %s: run %s started by hand (runner pid %d)",
        pipeline.name,
        values["id"],
        child.pid,
        extra={"event": "pipeline_run_started", "actor": owner},
    )
    return PipelineRuns(ledger).get(values["id"], owner)


def run_due(host: PipelineHost) -> None:
    """Start the runs of the schedules that are due (an engine host's duty, each tick)."""
    ledger = host.ledger
    now = ledger.clock()
    with ledger._read() as conn:
        due = conn.execute(
            select(schedules_t.c.id).where(
                schedules_t.c.paused == false(),
                schedules_t.c.next_due_at.is_not(None),
                schedules_t.c.next_due_at <= now,
            )
        ).all()
    for (schedule_id,) in due:
        try:
            _start_due(host, schedule_id, now)
        except Exception:  # one bad schedule must not hold back the others
            log.exception("schedule %s could not be run; will retry", schedule_id)


def _start_due(host: PipelineHost, schedule_id: str, now: datetime) -> None:
    ledger = host.ledger
    with ledger._read() as conn:
        row = conn.execute(
            _joined().where(schedules_t.c.id == schedule_id, schedules_t.c.paused == false())
        ).first()
    if row is None or row.next_due_at is None or row.next_due_at > now:
        return  # paused, deleted or advanced by another engine host meanwhile
    pipeline = _pipeline(row, None)
    schedule = pipeline.schedule
    assert schedule is not None
    chosen, due = choose_due_time(schedule, now)
    following = next_due(schedule.cron, schedule.timezone, now)[0]
    values = _new_run_values(pipeline, now, host.holder)
    values.update(schedule_id=schedule.id, scheduled_for=chosen)
    inserted = False
    with ledger._write() as conn:
        advanced = conn.execute(
            update(schedules_t)
            .where(
                schedules_t.c.id == schedule.id,
                schedules_t.c.next_due_at == schedule.next_due_at,
                schedules_t.c.paused == false(),
            )
            .values(
                next_due_at=following,
                last_scheduled_for=chosen or schedule.last_scheduled_for,
                updated_at=now,
            )
        ).rowcount
        if advanced != 1:
            return  # another engine host took this due time
        if chosen is not None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(runs).values(**values))
                inserted = True
            except IntegrityError:  # that (pipeline, time) already has its run
                log.info(
                    "pipeline %s: the run due %s exists already",
                    pipeline.name,
                    chosen.isoformat(),
                )
    skipped = due - (1 if chosen is not None else 0)
    if skipped > 0:
        log.warning(
            "pipeline %s: %d due time(s) missed and not run (catch-up %s, stale after %g s)",
            pipeline.name,
            skipped,
            schedule.catch_up.value,
            schedule.stale_after,
            extra={"event": "pipeline_runs_skipped", "actor": host.holder},
        )
    if not inserted:
        return
    assert chosen is not None
    child = host.launch(
        pipeline.owner, [*RUN_QUEUED, values["id"]], runner_log(host.settings, values["id"])
    )
    log.info(
        "pipeline %s: run %s started for %s (runner pid %d)",
        pipeline.name,
        values["id"],
        chosen.isoformat(),
        child.pid,
        extra={"event": "pipeline_run_started", "actor": host.holder},
    )


def schedule_notebook(
    client: Any,
    *,
    notebook: str,
    cron: str,
    root: str | None,
    content: dict[str, Any] | None = None,
    name: str | None = None,
    parameters: dict[str, Any] | None = None,
    backend: str | None = None,
    credential: str | None = None,
    experiment: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    timezone: str = "UTC",
    catch_up: str = "once",
    stale_after: float = 86400.0,
) -> Pipeline:
    """Save a notebook as the client owner's pipeline on a cron schedule, every check first
    (``qmlops pipeline schedule``, ``POST /pipelines``). The notebook: ``content`` (nbformat 4
    JSON) kept as the pipeline's own copy under the home (``pipelines/notebooks/<owner>/``),
    else the path ``notebook``, relative to ``root``; ``root`` None refuses a path (a team's
    service reads no user's files)."""
    from .runner import PipelineRequest, check_request

    check_cron(cron, timezone)
    name = name or Path(notebook).stem
    pipelines = Pipelines(client.ledger)
    if pipelines.find(name, client.owner) is not None:
        raise _name_taken(name)  # before a copy could replace that pipeline's notebook
    if content is not None:
        notebook = _keep_copy(client.settings.home, client.owner, name, content)
    elif root is None:
        raise InvalidRequest(
            "content: send the notebook itself; the service cannot read files on your server"
        )
    else:
        path = Path(notebook).expanduser()
        notebook = str(path if path.is_absolute() else Path(root) / path)
    request = PipelineRequest(
        notebook=notebook,
        parameters=dict(parameters or {}),
        backend=backend,
        credential=credential,
        experiment=experiment,
        timeout=timeout,
        retries=retries,
    )
    path, injected = check_request(client, request)
    return pipelines.create(
        owner=client.owner,
        name=name,
        notebook=str(path),
        parameters=injected,
        experiment=experiment,
        timeout=timeout,
        retries=retries,
        cron=cron,
        timezone=timezone,
        catch_up=catch_up,
        stale_after=stale_after,
    )


def _keep_copy(home: Path, owner: str, name: str, content: dict[str, Any]) -> str:
    """Write a notebook (checked as nbformat 4) to the owner's pipeline folder, atomically;
    return its path."""
    import json
    import os
    import re

    import nbformat

    try:
        nbformat.validate(nbformat.from_dict(content), version=4)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequest(f"content: not a valid notebook ({first[:200]})") from None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "pipeline"
    folder = home / "pipelines" / "notebooks" / (re.sub(r"[^A-Za-z0-9._-]+", "-", owner) or "owner")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{safe}.ipynb"
    temporary = target.with_suffix(".ipynb.tmp")
    temporary.write_text(json.dumps(content), encoding="utf-8")
    os.replace(temporary, target)
    return str(target)
