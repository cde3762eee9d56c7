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
        self.duties: list[tuple[str, Callable[[PipelineHost], object]]] = []
        from . import notify, parking, schedules, watch

        self.duties = [
            ("schedules", schedules.run_due),
            ("parked runs", parking.resume_due),
            ("dead runners", watch.end_dead_runs),
            ("notifications", notify.send_due),
        ]

    def tick(self) -> None:
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
        """Start ``python -m MODULE ARGS`` for ``owner``; see :func:`launch`."""
        return launch(self.settings, owner, args, log_path, module)


def launch(
    settings: Settings,
    owner: str,
    args: Sequence[str],
    log_path: Path,
    module: str = "qmlops_jupyter.cli",
) -> subprocess.Popen[bytes]:
    """Start ``python -m MODULE ARGS`` (``qmlops ARGS`` by default) for ``owner`` in a session
    of its own (it outlives the caller), on the caller's ledger and home, its output appended
    to ``log_path``."""
    env = dict(os.environ)
    env["QMLOPS_OWNER"] = owner
    env["QMLOPS_HOME"] = str(settings.home)
    env["QMLOPS_DATABASE_URL"] = settings.database_url
    env["QMLOPS_BACKENDS_FILE"] = str(settings.backends_file)
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
