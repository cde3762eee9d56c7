"""One MLflow run written by a child process that loads MLflow while its parent works.

Importing MLflow and opening its store costs about two seconds of CPU. A pipeline run's own
record is written only when the notebook ends, but doing that loading at the end puts it on the
run's critical path, and doing it in a thread of the runner makes it fight papermill's loop for
the GIL while the kernel runs. A child process does it beside the kernel instead: it is started
with the run, loads MLflow and finds the experiment, then waits for the one record to write.

The conversation is two JSON lines on the child's stdin (the store first, then the run) and one
on its stdout (``{"run_id": ...}`` or ``{"error": ...}``). The store URI (which may carry a
password) travels on the pipe, never on a command line. The child exits when its stdin closes,
so it cannot outlive a parent that dies. A process that already has MLflow loaded writes in
place (:func:`write_run`), as does the parent when the child is lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrackingConfig

#: How long the parent waits for the child's answer once the record is sent: MLflow's own HTTP
#: timeout (10 s a request, set by ``client_for``) bounds each call; uploads take a few.
ANSWER_TIMEOUT_SECONDS = 300.0


class RunNotWritten(Exception):
    """The store refused or could not be reached; the message is scrubbed of secrets."""


@dataclass
class RunRecord:
    """What one MLflow run holds: everything is plain data, so it crosses a pipe."""

    run_name: str
    start_ms: int
    end_ms: int
    status: str  # MLflow's: FINISHED, FAILED, KILLED
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: ``(key, value, step, timestamp_ms)``
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    #: Artifact name -> a file on this machine, read when the run is written.
    files: dict[str, str] = field(default_factory=dict)


def loaded() -> bool:
    """Whether this process has MLflow loaded already (then writing in place costs nothing)."""
    return "mlflow" in sys.modules


def prepare(store: TrackingConfig) -> Any:
    """MLflow's client on the store and the id of its ``experiment`` (created on first use)."""
    from .mlflow_io import client_for, experiment_id

    ml = client_for(store.uri)
    return ml, experiment_id(ml, store.safe_uri, store.experiment, store.artifact_root)


def write_run(store: TrackingConfig, record: RunRecord) -> str:
    """Write the run in this process and return its MLflow id; :class:`RunNotWritten` with a
    one-line, scrubbed message when the store fails."""
    from .mlflow_io import Content, log_content

    try:
        ml, exp_id = prepare(store)
        made = ml.create_run(
            exp_id, start_time=record.start_ms, tags=record.tags, run_name=record.run_name
        )
        run_id = str(made.info.run_id)
        content = Content(params=dict(record.params), metrics=[tuple(m) for m in record.metrics])
        for name, path in record.files.items():
            if Path(path).is_file():
                content.files[name] = Path(path).read_bytes()
        log_content(ml, run_id, content, made.info.artifact_uri)
        ml.set_terminated(run_id, record.status, end_time=record.end_ms)
        return run_id
    except Exception as exc:
        raise RunNotWritten(_message(exc)) from None


def _message(exc: BaseException) -> str:
    from ..errors import one_line
    from ..vault.redaction import redact
    from .config import scrub

    return redact(scrub(f"{exc.__class__.__name__}: {one_line(exc)}"))[:500]


class RunWriter:
    """The parent's side: :meth:`start` the child early, :meth:`write` the record at the end
    (falling back to writing in place if the child is gone), :meth:`close` if nothing is to be
    written after all."""

    def __init__(self, store: TrackingConfig, process: subprocess.Popen[bytes] | None) -> None:
        self.store = store
        self._process = process

    @classmethod
    def start(cls, store: TrackingConfig, *, child: bool | None = None) -> RunWriter:
        """Start the child loading MLflow, unless this process has it loaded already
        (``child``: start it, or not, whatever is loaded)."""
        if not (child if child is not None else not loaded()):
            return cls(store, None)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
            assert process.stdin is not None
            process.stdin.write(_line(asdict(store)))
            process.stdin.flush()
        except OSError:
            return cls(store, None)
        return cls(store, process)

    def write(self, record: RunRecord) -> str:
        """The MLflow run id; :class:`RunNotWritten` when the store failed."""
        process, self._process = self._process, None
        if process is not None:
            answer = _ask(process, record)
            if answer is not None:
                if "run_id" in answer:
                    return str(answer["run_id"])
                raise RunNotWritten(str(answer.get("error") or "no reason given"))
        return write_run(self.store, record)  # the child is gone: write in place

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop(process)

    def __del__(self) -> None:  # a writer dropped on an unexpected path must not linger
        with suppress(Exception):
            self.close()


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data) + "\n").encode()


def _ask(process: subprocess.Popen[bytes], record: RunRecord) -> dict[str, Any] | None:
    try:
        out, _ = process.communicate(_line(asdict(record)), timeout=ANSWER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise RunNotWritten(
            f"the MLflow store gave no answer in {ANSWER_TIMEOUT_SECONDS:.0f} s"
        ) from None
    except (OSError, ValueError):
        _stop(process)
        return None
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return answer if isinstance(answer, dict) else None


def _stop(process: subprocess.Popen[bytes]) -> None:
    with suppress(Exception):
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # the child ends on end of input
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _child() -> int:
    """Read the store, load MLflow and open it, read the run, write it, answer."""
    first = sys.stdin.readline()
    if not first:
        return 0
    store = TrackingConfig(**json.loads(first))
    with suppress(Exception):  # a failure here is met again, and reported, when writing
        prepare(store)
    second = sys.stdin.readline()
    if not second:
        return 0  # the parent had nothing to write (or died)
    data = json.loads(second)
    data["metrics"] = [tuple(m) for m in data.get("metrics") or []]
    try:
        answer: dict[str, Any] = {"run_id": write_run(store, RunRecord(**data))}
    except RunNotWritten as exc:
        answer = {"error": str(exc)}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
