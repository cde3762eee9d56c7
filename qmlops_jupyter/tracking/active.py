"""What is open right now in this process: tracked runs (innermost last) and profiles.

Process-wide, not per-context: ``%qmlops track NAME`` opens a run in one notebook cell and closes
it in another, and IPython does not carry context variables from cell to cell.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profiler import Profile
    from .run import TrackedRun

_lock = threading.Lock()
_runs: list[TrackedRun] = []
_profiles: list[Profile] = []


def current_run() -> TrackedRun | None:
    with _lock:
        return _runs[-1] if _runs else None


def push_run(run: TrackedRun) -> None:
    with _lock:
        _runs.append(run)


def pop_run(run: TrackedRun) -> None:
    with _lock:
        if run in _runs:
            _runs.remove(run)


def push_profile(profile: Profile) -> None:
    with _lock:
        _profiles.append(profile)


def pop_profile(profile: Profile) -> None:
    with _lock:
        if profile in _profiles:
            _profiles.remove(profile)


def profiles() -> list[Profile]:
    with _lock:
        return list(_profiles)


def anything_open() -> bool:
    return bool(_runs or _profiles)


def note_submitted(job: Any, seconds: float) -> None:
    """Tell open runs and profiles about a job just submitted (and the time it took)."""
    with _lock:
        runs, profs = list(_runs), list(_profiles)
    for run in runs[-1:]:
        run._note_job(job)
    for prof in profs:
        prof._note_job(job, seconds)


def note_waited(seconds: float) -> None:
    """Time spent in qmlops waiting for jobs (profiles count it apart from Python time)."""
    with _lock:
        profs = list(_profiles)
    for prof in profs:
        prof._note_wait(seconds)
