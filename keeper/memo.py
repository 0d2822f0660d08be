"""A small bounded memo for the decision stages: the last few results of a pure computation, keyed on the
exact contents of its inputs (:func:`array_key`), so a repeated input is answered without recomputing and a
changed input, even the same array object changed in place, is a different key and never sees a stale entry.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

__all__ = ["BoundedMemo", "array_key"]

T = TypeVar("T")


def array_key(*arrays: np.ndarray) -> tuple:
    """A hashable key of the arrays' shapes and exact bytes (same dtype assumed by the caller)."""
    return tuple((a.shape, a.tobytes()) for a in arrays)


class BoundedMemo(Generic[T]):
    """The results of the last ``size`` distinct keys; the oldest entry goes first when full.

    A computation that raises stores nothing (it raises again on the next call with that key).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"memo size {size} must be at least 1")
        self.size = size
        self._entries: dict[Hashable, T] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The stored result of ``key``, else ``compute()``, stored under ``key``."""
        try:
            return self._entries[key]
        except KeyError:
            pass
        value = compute()
        if len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)), None)  # the oldest entry
        self._entries[key] = value
        return value

    def clear(self) -> None:
        self._entries.clear()
