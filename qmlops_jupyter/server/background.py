"""Stopping the server's background tasks for sure."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | None, every: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``every`` seconds.

    Once is not always enough on Python 3.11: a cancellation that arrives while
    ``asyncio.wait_for`` is returning the value it waited for (a wake-up event set at that very
    moment) is lost, and a loop built on ``wait_for`` then goes on for ever, and so would a
    server's stop that awaited it."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
