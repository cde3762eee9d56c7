"""The engine host's pipeline duties, one pass each tick: start the runs of due schedules,
resume parked runs whose jobs have ended, end runs whose runner died, send notifications.

Everything here is driven by the ledger, so it happens while the user is logged out, and any
number of engine hosts may share one ledger: each run is started or resumed by one of them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..ledger import Ledger

log = logging.getLogger("qmlops_jupyter.pipelines")


class PipelineHost:
    """What an engine host does for pipelines; :meth:`tick` runs in a worker thread."""

    def __init__(self, ledger: Ledger, settings: Settings, holder: str) -> None:
        self.ledger = ledger
        self.settings = settings
        self.holder = holder
        #: Runner processes this host started and has not yet seen end (reaped each tick).
        self.children: list[subprocess.Popen[bytes]] = []
        self._children_lock = threading.Lock()
        self.duties: list[tuple[str, Callable[[PipelineHost], object]]] = []
        from . import notify, parking, schedules, watch

        self.duties = [
            ("schedules", schedules.run_due),
            ("parked runs", parking.resume_due),
            ("dead runners", watch.end_dead_runs),
            ("notifications", notify.send_due),
        ]

    def tick(self) -> None:
        self.reap()
        for name, duty in self.duties:
            try:
                duty(self)
            except Exception:  # one duty failing must not stop the others, or the engine
                log.exception("pipeline duty %r failed; will retry", name)

    def launch(
        self,
        owner: str,
        args: Sequence[str],
        log_path: Path,
        module: str = "qmlops_jupyter.cli",
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m MODULE ARGS`` for ``owner``; see :func:`launch`. The process is
        kept and polled each tick, so an ended one is reaped (never left a zombie) without
        ever waiting for one."""
        child = launch(self.settings, owner, args, log_path, module)
        with self._children_lock:
            self.children.append(child)
        return child

    def reap(self) -> list[subprocess.Popen[bytes]]:
        """Poll the processes this host started; forget (and return) those that ended."""
        with self._children_lock:
            ended = [c for c in self.children if c.poll() is not None]
            self.children = [c for c in self.children if c.returncode is None]
        for child in ended:
            if child.returncode:
                log.info(
                    "runner pid %d exited with code %d",
                    child.pid,
                    child.returncode,
                    extra={"event": "pipeline_runner_exit", "actor": self.holder},
                )
        return ended


def launch(
    settings: Settings,
    owner: str,
    args: Sequence[str],
    log_path: Path,
    module: str = "qmlops_jupyter.cli",
) -> subprocess.Popen[bytes]:
    """Start ``python -m MODULE ARGS`` (``qmlops ARGS`` by default) for ``owner``, detached
    from the caller (``setsid``: it outlives the caller), on the caller's ledger and home, its
    output appended to ``log_path``."""
    env = {**os.environ, **settings.environment(), "QMLOPS_OWNER": owner}
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
