"""Calling again while a server is away: the one retry loop the demo, the fault suite and
their clients share (only for calls that are safe to repeat)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Retryable = tuple[type[Exception], ...] | Callable[[Exception], bool]


async def retry_while(
    call: Callable[[], Awaitable[T]],
    retryable: Retryable,
    patience_s: float,
    *,
    pause_s: float = 1.0,
    growth: float = 1.0,
    max_pause_s: float = 2.0,
) -> T:
    """`call()`, again after a pause while it fails with a `retryable` error (exception
    types, or a test of the exception), for up to `patience_s` seconds (0: once).

    The pause starts at `pause_s` and grows by `growth` up to `max_pause_s` (when growing).
    The last error is raised when it is not retryable, or when the next pause would end
    after the patience is spent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    pause = pause_s
    while True:
        try:
            return await call()
        except Exception as exc:
            again = isinstance(exc, retryable) if isinstance(retryable, tuple) else retryable(exc)
            if not again or loop.time() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        if growth != 1.0:
            pause = min(max_pause_s, pause * growth)
