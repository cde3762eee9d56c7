"""Benchmark 5: per-job lineage cost that tracking (MLflow) adds to a small Aer job.

Every variant gets its own fresh ``QMLOPS_HOME`` (its own ledger and embedded MLflow store,
``$QMLOPS_HOME/mlflow/mlflow.db``), warmed up before anything is timed (imports, Aer, the
store's creation and its experiment). The job: a Bell pair in OpenQASM 2, 1,000 shots,
``client.submit(bell, shots=1000, seed=i, wait=True)``, N times in a row (default 100).

- **baseline**: ``QMLOPS_TRACKING=off``; submit time per job, in a block of N jobs before and
  after each tracked variant. Each variant is compared with the two blocks around it.
- **b, caller's view**: tracking on, jobs inside one ``track()`` run, the background sender
  running as in real use; added p50 and mean of ``submit(wait=True)`` over the baseline.
- **c, batched**: the same loop; (wall time of the N submits plus the run's final ``flush()``
  - N x baseline mean) / N: what it costs, per job, to have every job in MLflow (the target).
  **Drain only**: another home where the background sender never starts, so all N jobs stay
  queued; the run's ``flush()`` / N. **Sender held back**: that loop end to end, as in c.
- **d, naive**: the same N completed jobs (read back from that ledger), each logged into one
  run of a separate fresh store with one MLflow call per value: ``log_param`` per param,
  ``log_metric`` per metric, ``set_tag`` per tag (the run's ``qmlops.job_ids`` and
  ``qmlops.job_count``, which the batched drain writes once per batch), ``log_artifact`` per
  file. Reading the job and building its content is included, as it is in the drain.
- **e, standalone**: jobs outside ``track()``, each in its own run (``create_run`` +
  ``log_batch`` + ``log_artifacts`` + ``set_terminated``): end to end as in c, and drain only.

Checks: every job of a run has its artifact folder and its ``p_max`` point in MLflow and its
MLflow run id in the ledger; outbox rows that failed or were retried are counted (warm-up runs
included) and named in the c row's note.

Run alone: ``.venv/bin/python benchmarks/bench_tracking.py [--quick] [--tracking-jobs N]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    BELL_QASM2 as BELL,
)
from benchlib import (
    BenchResult,
    Row,
    log,
    percentile,
    profile_call,
    settle,
    summary,
    timed,
)

TARGET_MS = 10.0
WARMUP = 10
SHOTS = 1000
EXPERIMENT = "bench-tracking"
BENCH = "5 tracking"


def _client(base: Path, label: str, *, tracking: bool, sender: bool = True) -> Any:
    """A client on a fresh home; tracking resolved now (it reads the environment once).
    ``sender=False`` keeps the background sender from ever starting, so completed jobs stay
    queued in the outbox until an explicit ``flush()``."""
    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    home = Path(tempfile.mkdtemp(prefix=f"tracking-{label}-", dir=base))
    if tracking:
        os.environ.pop("QMLOPS_TRACKING", None)
    else:
        os.environ["QMLOPS_TRACKING"] = "off"
    client = Client(Settings.from_env(home=home))
    cfg = client.tracking.config
    os.environ.pop("QMLOPS_TRACKING", None)
    if cfg.enabled != tracking:
        raise RuntimeError(f"tracking for {label} should be {'on' if tracking else 'off'}: {cfg}")
    if not sender:
        client.tracking.kick = lambda: None  # instance attribute: the method is never called
    return client


def _submit(client: Any, seed: int) -> Any:
    job = client.submit(BELL, backend="aer", shots=SHOTS, seed=seed, wait=True)
    if job.record.state.value != "COMPLETED":
        raise RuntimeError(f"job {job.id} ended {job.record.state.value}")
    return job


def _loop(client: Any, n: int, first_seed: int) -> tuple[list[float], list[str]]:
    times: list[float] = []
    ids: list[str] = []
    for i in range(n):
        dt, job = timed(lambda s=first_seed + i: _submit(client, s))
        times.append(dt)
        ids.append(job.id)
    return times, ids


def _warm_up(client: Any, *, standalone: bool) -> None:
    """Aer, the ledger, and (tracking on) the MLflow store, its experiment and the code paths
    of a drain, all before timing."""
    from qmlops_jupyter.tracking import track

    if not client.tracking.enabled:
        _loop(client, WARMUP, 0)
        return
    with track(EXPERIMENT, run_name="warm-up", client=client):
        _loop(client, WARMUP, 0)
    if standalone:
        _, ids = _loop(client, 3, 100)
        if not client.tracking.flush(job_ids=ids):
            raise RuntimeError("warm-up: standalone jobs did not reach MLflow")


def _tracked(client: Any, n: int, label: str) -> dict[str, Any]:
    """N jobs in one track() run, then the run's flush; the run's own start and end timed
    apart (they are per run, not per job)."""
    from qmlops_jupyter.tracking import track

    run = track(EXPERIMENT, run_name=f"{label}-{n}", client=client)
    t_enter, _ = timed(run.__enter__)
    try:
        settle()
        started = time.perf_counter()
        times, ids = _loop(client, n, 10_000)
        t_flush, sent = timed(run.flush)
        total = time.perf_counter() - started
    finally:
        t_exit, _ = timed(lambda: run.__exit__(None, None, None))
    if not sent:
        raise RuntimeError(f"{label}: the run's flush did not send everything")
    return {
        "times": times,
        "ids": ids,
        "flush_s": t_flush,
        "total_s": total,
        "enter_s": t_enter,
        "exit_s": t_exit,
        "run": run,
    }


def _standalone(client: Any, n: int) -> dict[str, Any]:
    settle()
    started = time.perf_counter()
    times, ids = _loop(client, n, 20_000)
    t_flush, sent = timed(lambda: client.tracking.flush(job_ids=ids, timeout=120.0))
    total = time.perf_counter() - started
    if not sent:
        raise RuntimeError("standalone: flush did not send everything")
    return {"times": times, "ids": ids, "flush_s": t_flush, "total_s": total}


def _check_group(client: Any, run: Any, ids: list[str]) -> dict[str, Any]:
    """Every job of the run is in MLflow: one artifact folder and one ``p_max`` point per job,
    and the ledger knows each job's MLflow run."""
    from qmlops_jupyter.tracking.mlflow_io import client_for

    run_id = run.run_id
    mlflow = client_for(client.tracking.config.uri)
    folders = mlflow.list_artifacts(run_id, "jobs")
    points = mlflow.get_metric_history(run_id, "p_max")
    linked = sum(1 for i in ids if client.ledger.get_job(i).mlflow_run_id == run_id)
    errors = _outbox_errors(client, run_key=run.key)
    return {
        "artifact_folders": len(folders),
        "p_max_points": len(points),
        "jobs_linked": linked,
        "outbox_rows_with_error": errors,
        "ok": len(folders) == len(ids)
        and len(points) == len(ids)
        and linked == len(ids)
        and not errors,
    }


def _check_standalone(client: Any, ids: list[str]) -> dict[str, Any]:
    runs = {client.ledger.get_job(i).mlflow_run_id for i in ids}
    runs.discard(None)
    return {"runs": len(runs), "ok": len(runs) == len(ids)}


def _outbox_errors(client: Any, run_key: str | None = None) -> int:
    """Outbox rows that failed or were retried (whole ledger, warm-up included, or one run)."""
    from sqlalchemy import func, or_, select

    from qmlops_jupyter.ledger.orm import TrackingOutboxRow

    outbox = TrackingOutboxRow.__table__
    query = select(func.count()).where(or_(outbox.c.failed.is_(True), outbox.c.error.is_not(None)))
    if run_key is not None:
        query = query.where(outbox.c.run_key == run_key)
    with client.ledger._read() as conn:
        return int(conn.execute(query).scalar_one())


def _naive(base: Path, source: Any, ids: list[str]) -> dict[str, Any]:
    """Log the given completed jobs of ``source``'s ledger one value per MLflow call, into one
    run of a fresh embedded store."""
    from qmlops_jupyter.tracking.config import embedded_artifact_root, embedded_uri
    from qmlops_jupyter.tracking.mlflow_io import client_for, job_content

    home = Path(tempfile.mkdtemp(prefix="tracking-naive-", dir=base))
    (home / "mlflow").mkdir(parents=True)
    files = Path(tempfile.mkdtemp(prefix="files-", dir=home))
    uri = embedded_uri(home)
    mlflow = client_for(uri)
    exp_id = mlflow.create_experiment(
        EXPERIMENT, artifact_location=embedded_artifact_root(home) + "/" + EXPERIMENT
    )
    ledger = source.ledger
    calls = {"log_param": 0, "log_metric": 0, "set_tag": 0, "log_artifact": 0}

    def log_job(run_id: str, job_id: str, logged: dict[str, str], done: list[str]) -> None:
        record = ledger.get_job(job_id)
        step = int((record.lineage or {}).get("step") or 0)
        content = job_content(record, ledger.circuit_qasm3(job_id), group=True, step=step)
        for key, value in content.params.items():
            # MLflow refuses a param logged again with another value (``seed``): a naive
            # logger has to skip it, as the batched drain does.
            if logged.setdefault(key, value) == value:
                mlflow.log_param(run_id, key, value)
                calls["log_param"] += 1
        for key, value, at_step, ts in content.metrics:
            mlflow.log_metric(run_id, key, value, timestamp=ts, step=at_step)
            calls["log_metric"] += 1
        done.append(job_id)
        tags = {
            **content.tags,
            "qmlops.job_ids": ",".join(done),
            "qmlops.job_count": str(len(done)),
        }
        for key, value in tags.items():
            mlflow.set_tag(run_id, key, value)
            calls["set_tag"] += 1
        for rel, data in content.files.items():
            path = files / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            mlflow.log_artifact(run_id, str(path), artifact_path=str(Path(rel).parent))
            calls["log_artifact"] += 1

    # Warm-up: the store, the run-creation path and every kind of call, on a run of its own.
    warm = mlflow.create_run(exp_id, run_name="warm-up").info.run_id
    warm_logged: dict[str, str] = {}
    warm_done: list[str] = []
    for job_id in ids[:3]:
        log_job(warm, job_id, warm_logged, warm_done)
    mlflow.set_terminated(warm)
    calls = dict.fromkeys(calls, 0)

    run_id = mlflow.create_run(exp_id, run_name=f"naive-{len(ids)}").info.run_id
    logged: dict[str, str] = {}
    done: list[str] = []
    settle()
    times = []
    for job_id in ids:
        dt, _ = timed(lambda j=job_id: log_job(run_id, j, logged, done))
        times.append(dt)
    mlflow.set_terminated(run_id)
    folders = mlflow.list_artifacts(run_id, "jobs")
    return {
        "times": times,
        "calls": calls,
        "ok": len(folders) == len(ids),
        "artifact_folders": len(folders),
    }


def _p50(xs: list[float]) -> float:
    return percentile(xs, 50)


def run(args: Any) -> BenchResult:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "QMLOPS_EXPERIMENT"):
        os.environ.pop(var, None)
    os.environ.pop("QMLOPS_CONFIG_FILE", None)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    n = 20 if args.quick else args.tracking_jobs
    base = Path(tempfile.mkdtemp(prefix="tracking-", dir=args.home))
    log(f"[tracking] {n} Bell jobs (1,000 shots) per variant, each on a fresh QMLOPS_HOME")

    off = _client(base, "off", tracking=False)
    on = _client(base, "group", tracking=True)
    queued = _client(base, "queued", tracking=True, sender=False)
    alone = _client(base, "alone", tracking=True)
    alone_q = _client(base, "alone-queued", tracking=True, sender=False)
    for c, standalone in ((off, False), (on, False), (queued, False), (alone, True)):
        _warm_up(c, standalone=standalone)
    _warm_up(alone_q, standalone=True)

    # A baseline block (tracking off) before and after each variant: a variant's cost is
    # measured against the two blocks around it, so a slow stretch of the machine does not
    # land on one side only.
    blocks: list[list[float]] = []

    def baseline_block() -> None:
        settle()
        times, _ = _loop(off, n, 30_000 + 1_000 * len(blocks))
        blocks.append(times)
        log(f"[tracking]   baseline {len(blocks)}, tracking off: p50 {_p50(times) * 1e3:.2f} ms")

    baseline_block()
    group = _tracked(on, n, "group")
    group_check = _check_group(on, group["run"], group["ids"])
    log(
        f"[tracking]   track() run, sender on: submit p50 {_p50(group['times']) * 1e3:.2f} ms,"
        f" flush {group['flush_s'] * 1e3:.0f} ms, total {group['total_s']:.2f} s"
    )
    baseline_block()
    drain = _tracked(queued, n, "queued")
    drain_check = _check_group(queued, drain["run"], drain["ids"])
    log(f"[tracking]   track() run, {n} queued: flush {drain['flush_s'] * 1e3:.0f} ms")
    baseline_block()
    solo = _standalone(alone, n)
    solo_check = _check_standalone(alone, solo["ids"])
    log(f"[tracking]   standalone, sender on: total {solo['total_s']:.2f} s")
    baseline_block()
    solo_q = _standalone(alone_q, n)
    solo_q_check = _check_standalone(alone_q, solo_q["ids"])
    log(f"[tracking]   standalone, {n} queued: flush {solo_q['flush_s'] * 1e3:.0f} ms")
    baseline_block()

    naive = _naive(base, queued, drain["ids"])
    log(f"[tracking]   naive per-call logging: {sum(naive['times']):.2f} s for {n} jobs")

    profile = None
    if args.profile:
        from qmlops_jupyter.tracking import track

        with track(EXPERIMENT, run_name="profiled", client=queued) as prun:
            _loop(queued, n, 40_000)
            profile = str(profile_call("tracking", prun.flush))
    # Rows any drain of these ledgers failed or retried, warm-up runs included: a background
    # send and a flush racing on one run show up here.
    outbox_errors = {
        label: _outbox_errors(c)
        for label, c in (("group", on), ("queued", queued), ("alone", alone), ("alone_q", alone_q))
    }
    for c in (off, on, queued, alone, alone_q):
        c.ledger.close()

    ms = 1e3
    baseline = [t for block in blocks for t in block]
    base_p50 = _p50(baseline)

    def around(i: int) -> list[float]:
        """The baseline blocks before and after variant i."""
        return blocks[i] + blocks[i + 1]

    def added(times: list[float], i: int) -> tuple[float, float]:
        """Added p50 and mean of a variant's submits over the blocks around it (ms)."""
        ref = around(i)
        return (
            (_p50(times) - _p50(ref)) * ms,
            (statistics.fmean(times) - statistics.fmean(ref)) * ms,
        )

    def per_job(total: float, i: int) -> float:
        """Wall time of a variant's jobs until all are in MLflow, over the baseline, per job."""
        return (total - n * statistics.fmean(around(i))) / n * ms

    b_p50, b_mean = added(group["times"], 0)
    b_idle_p50, b_idle_mean = added(drain["times"], 1)
    c_batched = per_job(group["total_s"], 0)
    c_drain = drain["flush_s"] / n * ms
    c_held = per_job(drain["total_s"], 1)
    d_naive = statistics.fmean(naive["times"]) * ms
    e_total = per_job(solo["total_s"], 2)
    e_drain = solo_q["flush_s"] / n * ms
    ok = group_check["ok"] and drain_check["ok"] and naive["ok"]
    ok = ok and solo_check["ok"] and solo_q_check["ok"]
    bad = "" if ok else "NOT ALL JOBS REACHED MLFLOW"
    block_p50s = [_p50(b) * ms for b in blocks]
    drift = max(block_p50s) / min(block_p50s) - 1
    noisy = f"baseline blocks' p50 moved {drift:.0%}" if drift > 0.15 else ""

    rows = [
        Row(
            BENCH,
            f"baseline: submit, tracking off (p50 of {len(baseline)})",
            base_p50 * ms,
            "ms",
            note=noisy,
        ),
        Row(BENCH, "submit, track() run, sender on (p50)", _p50(group["times"]) * ms, "ms"),
        Row(BENCH, "b: added to submit, p50", b_p50, "ms", TARGET_MS),
        Row(BENCH, "b: added to submit, mean", b_mean, "ms", TARGET_MS),
        Row(
            BENCH, "c: batched, per job in MLflow (track run)", c_batched, "ms", TARGET_MS, note=bad
        ),
        Row(BENCH, f"c: drain only, {n} queued jobs, per job", c_drain, "ms"),
        Row(BENCH, "c: per job in MLflow, sender held back", c_held, "ms"),
        Row(BENCH, "b': added to submit, sender idle (p50)", b_idle_p50, "ms"),
        Row(BENCH, "d: naive per-call logging, per job", d_naive, "ms"),
        Row(BENCH, "d/c: naive / batched drain", d_naive / c_drain, "x"),
        Row(BENCH, "e: own run per job, end to end", e_total, "ms"),
        Row(BENCH, "e: own run per job, drain only", e_drain, "ms"),
    ]
    if not ok:
        rows[4].status = "ERROR"
    if any(outbox_errors.values()):
        rows[4].note = (rows[4].note + "; " if rows[4].note else "") + (
            f"outbox rows failed or retried: {sum(outbox_errors.values())}"
        )

    def loop_details(v: dict[str, Any]) -> dict[str, Any]:
        return {
            "submit_ms": summary(v["times"], ms),
            "flush_ms": round(v["flush_s"] * ms, 2),
            "total_s": round(v["total_s"], 4),
            **{f"{k[:-2]}_ms": round(v[k] * ms, 2) for k in ("enter_s", "exit_s") if k in v},
        }

    details = {
        "jobs": n,
        "shots": SHOTS,
        "warmup": WARMUP,
        "baseline_ms": summary(baseline, ms),
        "baseline_blocks_p50_ms": [round(x, 3) for x in block_p50s],
        "group_sender_on": {
            **loop_details(group),
            "added_p50_ms": round(b_p50, 3),
            "added_mean_ms": round(b_mean, 3),
            "check": group_check,
        },
        "group_queued": {
            **loop_details(drain),
            "added_p50_ms": round(b_idle_p50, 3),
            "added_mean_ms": round(b_idle_mean, 3),
            "check": drain_check,
        },
        "naive": {
            "per_job_ms": summary(naive["times"], ms),
            "calls": naive["calls"],
            "artifact_folders": naive["artifact_folders"],
        },
        "standalone_sender_on": {
            **loop_details(solo),
            "added_p50_ms": round(added(solo["times"], 2)[0], 3),
            "check": solo_check,
        },
        "standalone_queued": {
            **loop_details(solo_q),
            "added_p50_ms": round(added(solo_q["times"], 3)[0], 3),
            "check": solo_q_check,
        },
        "outbox_rows_with_error": outbox_errors,
        "note": "enter_ms/exit_ms: track() start (run created in MLflow) and end, once per run",
        "profile": profile,
    }
    return BenchResult("tracking", rows, details)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "tracking", *sys.argv[1:]]))
