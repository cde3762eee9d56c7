"""What a job becomes in MLflow, and the few MLflow calls that put it there.

A job's params, metrics and tags go in ``log_batch`` calls (chunked to MLflow's limits) and its
files in one ``log_artifacts`` call: a handful of requests per job, or per group of jobs, never
one per value.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..vault.redaction import redact

if TYPE_CHECKING:
    from ..models import JobRecord

#: MLflow's own limits (mlflow.utils.validation).
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
PARAMS_TAGS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
#: Per-circuit figures and files are kept for this many circuits of a batch job.
MAX_CIRCUITS_DETAILED = 50
PHASES = ("validate", "transpile", "queue", "run", "post_process")


@dataclass
class Content:
    """What to log: params, metrics ``(key, value, step, timestamp_ms)``, tags and files."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def merge(self, other: Content) -> None:
        for key, value in other.params.items():
            self.params.setdefault(key, value)
        self.metrics.extend(other.metrics)
        self.tags.update(other.tags)
        self.files.update(other.files)


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return redact(text)[:MAX_PARAM_LENGTH]


def source_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """Tags naming where the work came from, in MLflow's own names and ours."""
    tags: dict[str, str] = {}
    user = lineage.get("user")
    if user:
        tags["mlflow.user"] = user
        tags["qmlops.owner"] = user
    notebook, script = lineage.get("notebook"), lineage.get("script")
    if notebook:
        tags["mlflow.source.type"] = "NOTEBOOK"
        tags["mlflow.source.name"] = notebook
        tags["qmlops.notebook"] = notebook
    elif script:
        tags["mlflow.source.type"] = "LOCAL"
        tags["mlflow.source.name"] = script
    if lineage.get("pipeline_run"):
        tags["qmlops.pipeline_run"] = str(lineage["pipeline_run"])
    git = lineage.get("git") or {}
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = git["commit"]
        tags["qmlops.git.commit"] = git["commit"]
    if git:
        tags["qmlops.git.dirty"] = "true" if git.get("dirty") else "false"
    if git.get("branch"):
        tags["mlflow.source.git.branch"] = git["branch"]
    if git.get("repo_url"):
        tags["mlflow.source.git.repoURL"] = git["repo_url"]
    return {k: redact(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}


def parameter_params(lineage: dict[str, Any]) -> dict[str, str]:
    """Papermill (pipeline) parameters as params ``papermill.<name>``."""
    params = lineage.get("parameters") or {}
    return {f"papermill.{k}"[:250]: _param(v) for k, v in params.items()}


def counts_figures(counts: dict[str, int]) -> dict[str, float]:
    """Figures read off one circuit's counts: the top outcome's probability, the entropy of the
    outcome distribution (bits), how many distinct outcomes; each outcome's probability too
    when there are at most 4 classical bits."""
    total = sum(counts.values())
    if total <= 0:
        return {}
    probs = {k: v / total for k, v in counts.items()}
    figures = {
        "p_max": max(probs.values()),
        "entropy_bits": -sum(p * math.log2(p) for p in probs.values() if p > 0),
        "distinct_outcomes": float(len(counts)),
    }
    width = max((len(k.replace(" ", "")) for k in counts), default=0)
    if width <= 4:
        for key, p in sorted(probs.items()):
            figures[f"p_{key.replace(' ', '_')}"] = p
    return figures


def job_content(record: JobRecord, qasm: list[str], *, group: bool, step: int = 0) -> Content:
    """A completed job as MLflow params, metrics, tags and files.

    Alone in its run (``group=False``), the job's files sit at the top of the run's artifacts;
    in a group run they sit under ``jobs/<job id>/`` and its figures are metrics at ``step``.
    """
    content = Content()
    lineage = record.lineage or {}
    circuits = record.circuits
    ts = _ms(record.finished_at or record.updated_at)
    # -- params: what was asked for ------------------------------------------------------------
    gates: dict[str, int] = {}
    for info in circuits:
        for name, n in (info.gate_counts or {}).items():
            gates[name] = gates.get(name, 0) + int(n)
    params: dict[str, Any] = {
        "backend": record.backend,
        "shots": record.shots,
        "num_circuits": len(circuits),
        "circuit.width": max((c.num_qubits for c in circuits), default=0),
        "circuit.depth": max((c.depth for c in circuits), default=0),
        "circuit.size": sum(c.size for c in circuits),
    }
    params.update({f"gates.{name}": n for name, n in sorted(gates.items())})
    if 1 < len(circuits) <= 10:
        for c in circuits:
            params[f"circuit_{c.index}.width"] = c.num_qubits
            params[f"circuit_{c.index}.depth"] = c.depth
    for key in ("seed", "observables"):
        if key in record.options:
            params[key] = record.options[key]
    content.params = {k: _param(v) for k, v in params.items()}
    content.params.update(parameter_params(lineage))
    # -- metrics: what came out, and what it took --------------------------------------------
    prefix = "job." if group else ""
    metrics: dict[str, float] = {}
    for phase in PHASES:
        if phase in record.phases:
            metrics[f"{prefix}{phase}_seconds"] = float(record.phases[phase])
    if record.finished_at and record.created_at:
        metrics[f"{prefix}total_seconds"] = (record.finished_at - record.created_at).total_seconds()
    metrics[f"{prefix}shots_total"] = float(record.shots * max(1, len(circuits)))
    if record.estimated_cost_usd is not None:
        metrics[f"{prefix}estimated_cost_usd"] = float(record.estimated_cost_usd)
    if record.actual_cost_usd is not None:
        metrics[f"{prefix}actual_cost_usd"] = float(record.actual_cost_usd)
    result = record.result
    all_counts = list(result.counts) if result is not None else []
    expvals = result.expectation_values if result is not None else None
    for i, counts in enumerate(all_counts[:MAX_CIRCUITS_DETAILED]):
        where = "" if len(all_counts) == 1 else f"circuit_{i}."
        for key, value in counts_figures(counts).items():
            metrics[f"{where}{key}"] = value
        if expvals is not None and i < len(expvals):
            metrics[f"{where}expectation_value"] = float(expvals[i])
    content.metrics = [(k, v, step, ts) for k, v in metrics.items() if math.isfinite(v)]
    # -- tags: which jobs, where from ----------------------------------------------------------
    if not group:
        content.tags.update(source_tags(lineage))
        content.tags["qmlops.job_id"] = record.id
        content.tags["qmlops.job_ids"] = record.id
        content.tags["qmlops.backend"] = record.backend
        if record.provider_job_id:
            content.tags["qmlops.provider_job_ids"] = record.provider_job_id[:MAX_TAG_LENGTH]
        if record.options.get("credential"):
            content.tags["qmlops.credential"] = str(record.options["credential"])
        if record.name:
            content.tags["qmlops.job_name"] = record.name[:MAX_TAG_LENGTH]
    # -- files ---------------------------------------------------------------------------------
    base = f"jobs/{record.id}/" if group else ""
    for i, text in enumerate(qasm[:MAX_CIRCUITS_DETAILED]):
        content.files[f"{base}circuit_{i}.qasm"] = text.encode()
    counts_doc = {"job_id": record.id, "shots": record.shots, "counts": all_counts}
    if expvals is not None:
        counts_doc["expectation_values"] = expvals
    content.files[f"{base}counts.json"] = json.dumps(counts_doc, indent=1).encode()
    content.files[f"{base}job.json"] = redact(
        json.dumps(record.model_dump(mode="json", exclude={"result"}), indent=1)
    ).encode()
    for i, counts in enumerate(all_counts[:4]):
        name = "histogram.png" if i == 0 else f"histogram_{i}.png"
        title = f"job {record.id}" + (f" circuit {i}" if len(all_counts) > 1 else "")
        content.files[f"{base}{name}"] = histogram_png(counts, f"{title} - {record.backend}")
    return content


def histogram_png(counts: dict[str, int], title: str = "", top: int = 32) -> bytes:
    """A bar chart of counts as PNG (Pillow: a few milliseconds, no plotting stack)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = 640, 360
    left, right, top_m, bottom = 56, 16, 48, 64
    # A palette image: the same picture, encoded in a third of the time and size of RGB.
    image = Image.new("P", (width, height), 0)
    image.putpalette([255, 255, 255, 0, 0, 0, 47, 110, 186])
    black, blue = 1, 2  # palette indexes; 0 is the white background
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    items = sorted(counts.items())
    note = ""
    if len(items) > top:
        items = sorted(sorted(counts.items(), key=lambda kv: -kv[1])[:top])
        note = f" (top {top} of {len(counts)} outcomes)"
    total = sum(counts.values()) or 1
    peak = max((v for _, v in items), default=1) or 1
    draw.text((left, 10), (title + note)[:90], fill=black, font=font)
    plot_w, plot_h = width - left - right, height - top_m - bottom
    draw.line([(left, top_m), (left, top_m + plot_h), (left + plot_w, top_m + plot_h)], black)
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = top_m + plot_h - frac * plot_h
        draw.line([(left - 4, y), (left, y)], black)
        draw.text((4, y - 6), f"{frac * peak / total:.2f}", fill=black, font=font)
    if items:
        slot = plot_w / len(items)
        bar = max(1.0, slot * 0.7)
        every = max(1, math.ceil(len(items) * 8 * max(len(k) for k, _ in items) / plot_w / 1.2))
        for i, (key, value) in enumerate(items):
            x0 = left + i * slot + (slot - bar) / 2
            y0 = top_m + plot_h - value / peak * plot_h
            draw.rectangle([x0, y0, x0 + bar, top_m + plot_h], fill=blue)
            if i % every == 0:
                middle = x0 + bar / 2
                draw.text(
                    (middle - draw.textlength(key, font=font) / 2, top_m + plot_h + 6),
                    key,
                    fill=black,
                    font=font,
                )
                label = str(value)
                draw.text(
                    (middle - draw.textlength(label, font=font) / 2, y0 - 14),
                    label,
                    fill=black,
                    font=font,
                )
    draw.text((left, height - 22), f"probability; {total} shots", fill=black, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()


# -- MLflow client plumbing --------------------------------------------------------------------

_clients: dict[str, Any] = {}
_experiments: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def client_for(uri: str) -> Any:
    """One ``MlflowClient`` per tracking URI. The outbox retries on its own schedule, so
    MLflow's own HTTP retries are turned down (unless the environment already sets them)."""
    with _lock:
        found = _clients.get(uri)
        if found is not None:
            return found
    from .config import register_uri_secrets

    register_uri_secrets(uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Ending a run on a server prints "View run at ..." to stdout, which would land inside
    # `qmlops runs --json` and in notebook cells for every job.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    # A new local store announces its table creation at INFO; that is not news to our users.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from ..ledger.migrate import ALEMBIC_LOCK

    # MLflow migrates a database store with Alembic, whose context is process-global: never at
    # the same time as the ledger's own migrations in another thread.
    with ALEMBIC_LOCK:
        if uri.startswith("sqlite:///"):
            made = _open_sqlite_store(MlflowClient, uri)
        else:
            made = MlflowClient(tracking_uri=uri)
            if not uri.startswith(("http://", "https://", "databricks")):
                made.search_experiments(max_results=1)
    with _lock:
        return _clients.setdefault(uri, made)


def _open_sqlite_store(factory: Any, uri: str) -> Any:
    """Open (creating or migrating) a local SQLite store under a file lock: MLflow's own table
    creation is not safe when two processes (an engine host and a kernel) open a new store at
    once."""
    import fcntl
    from pathlib import Path

    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".init.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                client = factory(tracking_uri=uri)
                client.search_experiments(max_results=1)
            except Exception as exc:
                if not _drop_interrupted_migration(path, exc):
                    raise
                client = factory(tracking_uri=uri)
                client.search_experiments(max_results=1)
            _use_wal(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _drop_interrupted_migration(path: Any, exc: BaseException) -> bool:
    """Drop what a migration of the store left when its process died in the middle of one
    (a kernel ending while its tracking thread created a new store): Alembic's batch
    operations copy a table into ``_alembic_tmp_<table>``, and a leftover copy makes every
    later migration fail. Called under the store's file lock, so no migration is under way;
    the interrupted step then runs again. True if there was such a leftover."""
    import sqlite3

    if "_alembic_tmp_" not in str(exc):
        return False
    con = sqlite3.connect(str(path), timeout=30)
    try:
        tables = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        names = [row[0] for row in tables if row[0].startswith("_alembic_tmp_")]
        for name in names:
            con.execute(f'DROP TABLE "{name}"')
        con.commit()
    finally:
        con.close()
    if names:
        logging.getLogger("qmlops_jupyter.tracking").warning(
            "tracking store %s: dropped %s, left by an interrupted migration", path, names
        )
    return bool(names)


def experiment_id(client: Any, uri: str, name: str, artifact_root: str | None) -> str:
    """The experiment's id, creating it (with its artifacts under ``artifact_root`` for a local
    store) on first use."""
    with _lock:
        found = _experiments.get((uri, name))
    if found is not None:
        return found
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if artifact_root:
            location = artifact_root.rstrip("/") + "/" + _safe_folder(name)
        try:
            exp_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created meanwhile by another process
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
    with _lock:
        _experiments[(uri, name)] = exp_id
    return exp_id


def _use_wal(path: Any) -> None:
    """Write-ahead logging for a local MLflow store (it persists in the file): fewer syncs per
    commit, and readers (the UI, ``qmlops runs``) never block the sender."""
    import sqlite3

    con = sqlite3.connect(str(path), timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _safe_folder(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "experiment"


def find_run(client: Any, exp_id: str, run_key: str) -> str | None:
    """A run made earlier for this key (by an attempt that did not live to record it)."""
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.`qmlops.run_key` = '{run_key}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_content(
    client: Any, run_id: str, content: Content, artifact_uri: str | None = None
) -> None:
    """Params, metrics and tags in as few ``log_batch`` calls as MLflow's limits allow, then
    every file in one ``log_artifacts`` (straight to the run's artifact store when its
    ``artifact_uri`` is known, sparing MLflow a lookup of the run)."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v) for k, v in content.params.items()]
    tags = [RunTag(k, v) for k, v in content.tags.items()]
    metrics = [Metric(k, v, ts, step) for k, v, step, ts in content.metrics]
    while params or tags or metrics:
        take_params = params[:PARAMS_TAGS_PER_BATCH]
        take_tags = tags[: PARAMS_TAGS_PER_BATCH - len(take_params)]
        take_metrics = metrics[:METRICS_PER_BATCH]
        client.log_batch(run_id, metrics=take_metrics, params=take_params, tags=take_tags)
        params = params[len(take_params) :]
        tags = tags[len(take_tags) :]
        metrics = metrics[len(take_metrics) :]
    if content.files:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="qmlops-artifacts-") as tmp:
            for rel, data in content.files.items():
                path = Path(tmp) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            if artifact_uri:
                from mlflow.store.artifact.artifact_repository_registry import (
                    get_artifact_repository,
                )

                repo = get_artifact_repository(artifact_uri, tracking_uri=client.tracking_uri)
                repo.log_artifacts(tmp)
            else:
                client.log_artifacts(run_id, tmp)


def is_unreachable(exc: BaseException) -> bool:
    """A tracking store that is down or unreachable (retry later), as opposed to one that
    refused what was sent."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", "")
        if code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"):
            return False
        text = str(exc).lower()
        return any(
            s in text
            for s in ("max retries", "connection", "timed out", "temporarily", "503", "502")
        ) or code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "")
    return isinstance(exc, OSError | TimeoutError) or exc.__class__.__name__ in (
        "ConnectionError",
        "OperationalError",
        "Timeout",
        "ReadTimeout",
    )
