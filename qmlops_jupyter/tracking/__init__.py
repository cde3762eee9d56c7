"""Experiment tracking with MLflow: lineage from notebook to circuits, jobs, shots and cost.

- Every completed job is logged (its own run, or its tracked run's): params, metrics, tags
  (job ids, provider ids, notebook, git commit), artifacts (OpenQASM, counts, histogram);
- :func:`track` groups jobs into one run, with per-step helpers and nested runs;
- :func:`profile` times the phases of the jobs of a block;
- the outbox (:mod:`.outbox`) makes sure the ledger never waits on, nor loses to, MLflow.

Nothing here imports MLflow until something is sent.
"""

from __future__ import annotations

from .profiler import Profile, profile
from .run import TrackedRun, track

__all__ = ["Profile", "TrackedRun", "profile", "track"]
