"""Calling an operation that a driver may implement either way: a plain function in the
kernel's synchronous paths, a coroutine where this emulation waits (the device side answers
through trio). One helper for every caller of such an operation table."""

from __future__ import annotations

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    """The value, awaited first when the operation returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
