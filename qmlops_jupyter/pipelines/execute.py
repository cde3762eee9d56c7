"""One attempt of a pipeline run: papermill executes the notebook in this process, its kernel in
a process group of its own.

The runner used to start a child process per attempt that imported papermill again (1.6 s on a
two-core machine) before it could start the kernel. Now papermill runs here, and only the
kernel is a process of its own: jupyter_client starts it with ``setsid``, so it leads a process
group, and what it starts stays in that group unless it calls ``setsid`` itself
(:func:`stop_process_tree` follows those too). The kernel is started here rather than by
papermill, so the run chooses its environment and working folder without touching this
process's (papermill would ``chdir``; a sweep runs several runs in one process).

A watchdog thread ends the attempt from outside: at the run's deadline, or when the run is
cancelled, it stops the kernel and everything it started (SIGTERM, then SIGKILL after a grace
period). Papermill then sees a dead kernel and returns with an error, which the attempt reports
as ``timed_out`` or ``cancelled``.

``python -m qmlops_jupyter.pipelines.execute SPEC.json`` still runs one attempt from a spec
file (``{"input", "output", "result", "parameters", "kernel_name", "language", "cwd"}``) and
writes the outcome to ``result``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

INJECTED_TAG = "injected-parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"
#: The first cell of a resumed part: it puts the parked namespace back (never counted).
RESTORE_TAG = "qmlops-restore"
#: Cells that are not the input notebook's own.
NOT_INPUT_TAGS = frozenset({INJECTED_TAG, ERROR_MARKER_TAG, RESTORE_TAG})
#: Seconds between SIGTERM and SIGKILL when a kernel is stopped.
KILL_GRACE_SECONDS = 3.0
#: An ipykernel argument papermill passes too: no history file shared between kernels.
KERNEL_ARGUMENTS = ["--HistoryManager.hist_file=:memory:"]


def is_input_cell(cell: Any) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return not NOT_INPUT_TAGS.intersection(tags)


def input_cell_index(output_path: str, fallback: int | None, offset: int = 0) -> int | None:
    """The failing cell's index in the input notebook: papermill's index counts the cell it
    injected (and its output gains error markers). ``offset``: the input index of the first
    counted cell (a resumed part starts at its park cell)."""
    try:
        import nbformat

        nb = nbformat.read(output_path, as_version=4)
    except Exception:
        return fallback
    index = offset
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        failed = cell.get("metadata", {}).get("papermill", {}).get("exception") is True or any(
            o.get("output_type") == "error" for o in cell.get("outputs", [])
        )
        if RESTORE_TAG in tags and failed:
            return None  # the parked state could not be put back: no cell of the notebook
        if not is_input_cell(cell):
            continue
        if failed:
            return index
        index += 1
    return fallback


# -- stopping a kernel and what it started -----------------------------------------------------


def stop_process_tree(child: Any, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the child's process group and the group of each of its descendants (one that
    called ``setsid`` leads another), then SIGKILL whatever is left after ``grace``
    seconds; the child (a :class:`subprocess.Popen`) is reaped."""
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
    _signal_all(groups, [child.pid, *left] if child.poll() is None else left, signal.SIGKILL)
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


def processes_of(run_ids: set[str]) -> list[int]:
    """Live processes of this machine whose environment names one of these pipeline runs (the
    notebook runner and the kernel of each: the runner gives them ``QMLOPS_PIPELINE_RUN_ID``)."""
    markers = {f"QMLOPS_PIPELINE_RUN_ID={r}".encode() for r in run_ids}
    found = []
    proc = Path("/proc")
    if not proc.is_dir() or not markers:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if markers.intersection(environ) and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_processes_of(*run_ids: str) -> None:
    """SIGTERM what is still running for these runs (each process and its group, as a kernel
    leads its own), then SIGKILL what is left after a grace period."""
    pids = processes_of(set(run_ids))
    if not pids:
        return
    own_group = os.getpgrp()
    groups = set()
    for pid in pids:
        with suppress(OSError):
            group = os.getpgid(pid)
            if group != own_group and group in pids:
                groups.add(group)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with suppress(OSError):
                os.killpg(group, sig)
        for pid in pids:
            with suppress(OSError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            break
        end = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < end and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


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


# -- papermill's log -------------------------------------------------------------------------

_log_lock = threading.Lock()
#: Runs in this process logging papermill to their files, and the logger's settings before.
_log_state: dict[str, Any] = {"users": 0, "level": logging.NOTSET, "propagate": True}


@contextmanager
def _papermill_log_to(path: Path) -> Iterator[None]:
    """Papermill's and nbclient's messages ("Passed unknown parameter", "Kernel died ...") go
    to the attempt's log, not to the terminal of ``qmlops pipeline run``, as they did when
    papermill ran in a child process whose output was that log. Several runs in one process
    (a sweep's threads) each get their own thread's messages."""
    logger = logging.getLogger("papermill")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    with _log_lock:
        if _log_state["users"] == 0:
            _log_state["level"], _log_state["propagate"] = logger.level, logger.propagate
            logger.setLevel(logging.INFO)
            logger.propagate = False
        _log_state["users"] += 1
        logger.addHandler(handler)
    try:
        yield
    finally:
        with _log_lock:
            logger.removeHandler(handler)
            _log_state["users"] -= 1
            if _log_state["users"] == 0:
                logger.setLevel(_log_state["level"])
                logger.propagate = _log_state["propagate"]
        handler.close()


# -- one attempt -----------------------------------------------------------------------------


class Kernel:
    """A kernel for one attempt, leading a process group of its own, its own output (what it writes
    outside the notebook) going to the attempt's log."""

    def __init__(self, km: Any, buffer: Any = None) -> None:
        self.km = km
        self.process = km.provisioner.process
        #: Where the kernel writes until the attempt's log is known (an unlinked file).
        self._buffer = buffer

    @classmethod
    def start(
        cls, kernel_name: str, env: dict[str, str], cwd: str, log_path: Path | None = None
    ) -> Kernel:
        """Start it now; it boots while the caller does other things (papermill waits until it
        answers). Without ``log_path`` its output goes to an anonymous temporary file (gone
        whatever happens to this process), appended to the attempt's log by
        :meth:`keep_log`: a kernel may start before the run's folder exists."""
        import tempfile

        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        km = AsyncKernelManager(kernel_name=kernel_name)
        # A log file is closed after the start (the kernel has its own descriptor); the buffer
        # stays open until :meth:`keep_log` reads it.
        buffer = tempfile.TemporaryFile() if log_path is None else None  # noqa: SIM115
        with ExitStack() as closing:
            output = buffer if buffer is not None else closing.enter_context(open(log_path, "ab"))
            try:
                run_sync(km.start_kernel)(
                    env=dict(env),
                    cwd=cwd,
                    stdout=output,
                    stderr=output,
                    extra_arguments=list(KERNEL_ARGUMENTS),
                )
            except BaseException:
                if buffer is not None:
                    buffer.close()
                raise
        return cls(km, buffer)

    def shut_down(self, grace: float = KILL_GRACE_SECONDS) -> None:
        """Let the kernel end as papermill would (a shutdown request, so its exit handlers
        run), then make sure it and what it started are gone, it is reaped, and its
        connection file removed."""
        from jupyter_core.utils import run_sync

        if self.process.poll() is None:
            try:
                run_sync(self.km.shutdown_kernel)(now=False)
            except Exception:
                logging.getLogger("qmlops_jupyter.pipelines").debug(
                    "kernel shutdown failed", exc_info=True
                )
        if self.process.poll() is None:
            stop_process_tree(self.process, grace)
        with suppress(Exception):
            self.process.wait()
        with suppress(Exception):
            self.km.cleanup_connection_file()
        with suppress(Exception):
            self.km.cleanup_ipc_files()

    def kill(self, grace: float = KILL_GRACE_SECONDS) -> None:
        """Stop it at once (the run did not get as far as using it)."""
        if self.process.poll() is None:
            stop_process_tree(self.process, grace)
        self.shut_down(grace)
        self.keep_log(None)

    def keep_log(self, log_path: Path | None) -> None:
        """Append what the kernel wrote before its log was known to ``log_path`` (None:
        drop it)."""
        buffer, self._buffer = self._buffer, None
        if buffer is None:
            return
        with buffer:
            if log_path is not None:
                buffer.seek(0)
                with suppress(OSError), open(log_path, "ab") as out:
                    out.write(buffer.read())


def execute(
    spec: dict[str, Any],
    env: dict[str, str] | None = None,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    log_path: Path | None = None,
    grace: float = KILL_GRACE_SECONDS,
    kernel: Kernel | None = None,
) -> dict[str, Any]:
    """Run one attempt; its outcome: ``status`` completed, failed, timed_out or cancelled, and
    for a failure ``cell`` (the input notebook's index, or None), ``ename``, ``evalue``.

    ``spec``: ``input`` (a path), ``output``, ``parameters``, ``kernel_name``, ``language``,
    ``cwd``, optionally ``cell_offset`` (the input index of the first counted cell). ``env``:
    the kernel's environment. ``deadline``: a :func:`time.monotonic` time at which the kernel
    is stopped. ``cancel``: set it to stop the kernel now. ``log_path``: where the kernel's
    own output and papermill's log go. ``kernel``: one started already (:meth:`Kernel.start`),
    else one is started here."""
    log_path = Path(log_path or os.devnull)
    cancel = cancel or threading.Event()
    if cancel.is_set():
        if kernel is not None:
            kernel.kill(grace)
        return {"status": "cancelled"}
    if kernel is None:
        env = dict(env if env is not None else os.environ)
        try:
            kernel = Kernel.start(spec["kernel_name"], env, spec["cwd"], log_path)
        except Exception as exc:  # no such kernel, a kernel that cannot start ...
            return {
                "status": "failed",
                "cell": None,
                "ename": exc.__class__.__name__,
                "evalue": " ".join(str(exc).split()),
            }
    process = kernel.process
    finished = threading.Event()
    stopped: list[str] = []

    def watch() -> None:
        while not finished.is_set():
            if cancel.is_set():
                stopped.append("cancelled")
            elif deadline is not None and time.monotonic() >= deadline:
                stopped.append("timed_out")
            else:
                wait = 0.1 if deadline is None else min(0.1, max(deadline - time.monotonic(), 0))
                finished.wait(wait)
                continue
            stop_process_tree(process, grace)
            return

    watchdog = threading.Thread(target=watch, name="qmlops-pipeline-watchdog", daemon=True)
    watchdog.start()
    try:
        with _papermill_log_to(log_path):
            outcome = _papermill(spec, kernel.km)
    finally:
        finished.set()
        watchdog.join()
        kernel.shut_down(grace)
        kernel.keep_log(log_path)
    if stopped:
        return {"status": stopped[0]}
    return outcome


def _papermill(spec: dict[str, Any], km: Any) -> dict[str, Any]:
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError
    except ImportError as exc:  # checked before the run; a broken install still ends clearly
        return {"status": "failed", "cell": None, "ename": "ImportError", "evalue": str(exc)}
    try:
        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec.get("parameters") or None,
            kernel_name=spec["kernel_name"],
            language=spec["language"],
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
            km=km,
        )
    except PapermillExecutionError as exc:
        return {
            "status": "failed",
            "cell": input_cell_index(
                spec["output"], exc.cell_index, offset=int(spec.get("cell_offset") or 0)
            ),
            "exec_count": exc.exec_count,
            "ename": exc.ename,
            "evalue": exc.evalue,
        }
    except Exception as exc:  # the kernel died, the notebook could not be read ...
        return {
            "status": "failed",
            "cell": None,
            "ename": exc.__class__.__name__,
            "evalue": " ".join(str(exc).split()),
        }
    return {"status": "completed"}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    outcome = execute(spec, dict(os.environ))
    Path(spec["result"]).write_text(json.dumps(outcome))
    return 0 if outcome["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
