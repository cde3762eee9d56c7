"""The job state machine: the states and the only transitions allowed between them.

```
CREATED -> SUBMITTING -> QUEUED -> RUNNING -> COMPLETED | FAILED | CANCELLED
              \\-> NEEDS_ATTENTION (submitted to hardware, outcome unknown)
any active state -> CANCELLING -> CANCELLED (or COMPLETED/FAILED if the job ended first)
```

The ledger enforces these with compare-and-set updates; terminal states have no way out.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    CREATED = "CREATED"
    SUBMITTING = "SUBMITTING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @classmethod
    def parse(cls, value: str) -> JobState:
        """Accept any case (`completed`, `Completed`); raise InvalidRequest otherwise."""
        from .errors import InvalidRequest

        try:
            return cls(value.strip().upper())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise InvalidRequest(f"unknown job state {value!r}; expected one of {names}") from None


S = JobState

TERMINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})

#: States an engine still has work to do in.
ACTIVE_STATES = frozenset({S.CREATED, S.SUBMITTING, S.QUEUED, S.RUNNING, S.CANCELLING})

#: States that hold one of a backend's concurrent-job slots.
IN_FLIGHT_STATES = frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING, S.CANCELLING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.CREATED: frozenset({S.SUBMITTING, S.CANCELLED, S.FAILED}),
    # SUBMITTING -> COMPLETED/RUNNING: providers that run at once (local simulators) may skip
    # the queue.
    S.SUBMITTING: frozenset(
        {S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLING, S.CANCELLED, S.NEEDS_ATTENTION}
    ),
    # QUEUED/RUNNING -> SUBMITTING: a simulator job cut off by a crash is run again.
    S.QUEUED: frozenset(
        {
            S.SUBMITTING,
            S.RUNNING,
            S.COMPLETED,
            S.FAILED,
            S.CANCELLING,
            S.CANCELLED,
            S.NEEDS_ATTENTION,
        }
    ),
    S.RUNNING: frozenset(
        {S.SUBMITTING, S.COMPLETED, S.FAILED, S.CANCELLING, S.CANCELLED, S.NEEDS_ATTENTION}
    ),
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPLETED, S.FAILED}),
    # A person (or a re-attach that finds the job) resolves NEEDS_ATTENTION.
    S.NEEDS_ATTENTION: frozenset({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


def is_legal(old: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[old]
