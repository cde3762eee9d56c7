"""The MLflow run writer: a child process that loads MLflow beside the work and writes one run.

Real: the child is a real ``python -m qmlops_jupyter.tracking.writer`` process, the store is
the embedded SQLite MLflow store (read back with ``MlflowClient``); the unreachable store is a
closed loopback port.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from qmlops_jupyter.tracking.config import TrackingConfig, embedded_artifact_root, embedded_uri
from qmlops_jupyter.tracking.writer import RunNotWritten, RunRecord, RunWriter


def store_in(folder: Path, experiment: str = "writer-test") -> TrackingConfig:
    uri = embedded_uri(folder)
    return TrackingConfig(True, uri, experiment, embedded_artifact_root(folder), embedded=True)


def record(output: Path | None = None) -> RunRecord:
    now = int(time.time() * 1000)
    return RunRecord(
        run_name="pipeline demo",
        start_ms=now - 5000,
        end_ms=now,
        status="FINISHED",
        tags={"qmlops.pipeline_run": "run-1"},
        params={"papermill.shots": "300"},
        metrics=[("duration_s", 5.0, 0, now), ("attempts", 1.0, 0, now)],
        files={"output.ipynb": str(output)} if output else {},
    )


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def read_back(folder: Path, run_id: str):
    from mlflow.tracking import MlflowClient

    ml = MlflowClient(tracking_uri=embedded_uri(folder))
    return ml, ml.get_run(run_id)


def test_the_child_writes_the_run_with_its_params_metrics_tags_and_files(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    output.write_text('{"cells": []}')
    writer = RunWriter.start(store_in(tmp_path), child=True)
    process = writer._process
    assert process is not None and process.poll() is None
    # The store travels on the pipe: the child's command line names no URI.
    assert b"sqlite" not in cmdline(process.pid) and b"writer-test" not in cmdline(process.pid)
    run_id = writer.write(record(output))
    assert process.wait(timeout=10) == 0  # it answered and left
    ml, mlrun = read_back(tmp_path, run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "pipeline demo"
    assert ml.get_experiment(mlrun.info.experiment_id).name == "writer-test"
    assert mlrun.data.params == {"papermill.shots": "300"}
    assert mlrun.data.metrics == {"duration_s": 5.0, "attempts": 1.0}
    assert mlrun.data.tags["qmlops.pipeline_run"] == "run-1"
    assert [a.path for a in ml.list_artifacts(run_id)] == ["output.ipynb"]
    local = ml.download_artifacts(run_id, "output.ipynb", str(tmp_path / "back"))
    assert Path(local).read_text() == '{"cells": []}'


def test_a_lost_child_is_replaced_by_writing_in_place(tmp_path: Path) -> None:
    writer = RunWriter.start(store_in(tmp_path), child=True)
    assert writer._process is not None
    os.kill(writer._process.pid, signal.SIGKILL)
    writer._process.wait(timeout=10)
    run_id = writer.write(record())
    _, mlrun = read_back(tmp_path, run_id)
    assert mlrun.data.params == {"papermill.shots": "300"}


def test_the_child_leaves_when_nothing_is_written(tmp_path: Path) -> None:
    writer = RunWriter.start(store_in(tmp_path), child=True)
    process = writer._process
    assert process is not None
    writer.close()
    assert process.poll() is not None  # closed and reaped
    # A parent that dies closes the pipe too: the child leaves on its own.
    other = RunWriter.start(store_in(tmp_path), child=True)
    assert other._process is not None and other._process.stdin is not None
    other._process.stdin.close()
    assert other._process.wait(timeout=30) == 0
    other._process = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("child", [True, False], ids=["child", "in-place"])
def test_an_unreachable_store_is_one_scrubbed_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: bool
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"
    store = TrackingConfig(True, uri, "exp", None, embedded=False)
    writer = RunWriter.start(store, child=child)
    if child:
        assert writer._process is not None
        assert b"s3cret" not in cmdline(writer._process.pid)
    with pytest.raises(RunNotWritten) as caught:
        writer.write(record())
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert "127.0.0.1" in message or "Connection" in message
