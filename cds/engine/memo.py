"""One bounded memo for the pure lookups that recur on every hook call (texts, codes, numbers, dates).

Codes, drug and condition names, engine sentences and dates repeat across calls and patients, so each
is worked out once per worker. A memo holds at most `size` keys and starts over when full: cheaper on
the hot path than LRU bookkeeping, and the keys that matter come back at once. `admit` may refuse to
store a key (e.g. a long free text), which is then computed every time. Look up with `memo[key]`.
"""

from __future__ import annotations

# typing, not collections.abc: the engine imports only the modules tests/engine/test_purity.py allows
from typing import Callable, Hashable, TypeVar  # noqa: UP035

__all__ = ["Memo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict[K, V]):
    """memo[key]: a plain dict lookup when remembered (C speed on the hot path), else fn(key)."""

    __slots__ = ("_admit", "_fn", "_size")

    def __init__(self, fn: Callable[[K], V], size: int, admit: Callable[[K], bool] | None = None) -> None:
        super().__init__()
        self._fn = fn
        self._size = size
        self._admit = admit

    def __missing__(self, key: K) -> V:
        value = self._fn(key)
        if self._admit is None or self._admit(key):
            if len(self) >= self._size:
                self.clear()
            self[key] = value
        return value
