"""Stopping background tasks: a cancellation the task loses is sent again (real asyncio)."""

from __future__ import annotations

import asyncio

from qmlops_jupyter.server.background import cancel_and_wait


def test_a_task_that_loses_a_cancellation_is_still_stopped() -> None:
    """As ``asyncio.wait_for`` can on Python 3.11: the first cancellation is swallowed and the
    loop goes on; a single cancel-and-await would wait for ever."""
    lost: list[int] = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if not lost:
                    lost.append(1)  # lose the first one, as the wait_for race does
                    continue
                raise

    async def main() -> None:
        task = asyncio.create_task(loop())
        await asyncio.sleep(0.1)
        await asyncio.wait_for(cancel_and_wait(task, every=0.2), timeout=10)
        assert task.cancelled() and lost == [1]
        await cancel_and_wait(None)  # nothing to stop

    asyncio.run(main())
