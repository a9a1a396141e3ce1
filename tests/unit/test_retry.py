"""retry_while: again while the error is retryable and patience lasts, never otherwise."""

from __future__ import annotations

import pytest

from clearway.retry import retry_while


class Away(Exception):
    """The server is away (retryable)."""


class Refused(Exception):
    """The server said no (not retryable)."""


def failing(errors: list[Exception], result: str = "ok"):
    """A call that raises each of `errors` in turn, then returns `result`; counts calls."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


async def test_a_retryable_error_is_tried_again_until_the_call_answers() -> None:
    call, calls = failing([Away(), Away()])
    assert await retry_while(call, (Away,), 5.0, pause_s=0.01) == "ok"
    assert len(calls) == 3


async def test_another_error_is_raised_at_once() -> None:
    call, calls = failing([Refused()])
    with pytest.raises(Refused):
        await retry_while(call, (Away,), 5.0, pause_s=0.01)
    assert len(calls) == 1


async def test_a_test_of_the_exception_decides_as_well() -> None:
    call, calls = failing([Away("503"), Away("400")])
    with pytest.raises(Away, match="400"):
        await retry_while(call, lambda exc: str(exc) == "503", 5.0, pause_s=0.01)
    assert len(calls) == 2


async def test_no_patience_means_one_try_and_patience_spent_raises_the_last_error() -> None:
    call, calls = failing([Away()])
    with pytest.raises(Away):
        await retry_while(call, (Away,), 0.0, pause_s=0.01)
    assert len(calls) == 1
    call, calls = failing([Away(str(n)) for n in range(100)])
    with pytest.raises(Away):
        await retry_while(call, (Away,), 0.2, pause_s=0.05, growth=2.0, max_pause_s=0.1)
    assert 2 <= len(calls) <= 5  # pauses 0.05, 0.1, 0.1: the fourth would end past 0.2 s
