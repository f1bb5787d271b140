"""cds.engine.memo.Memo: remembers fn(key), at most `size` keys, and stores only admitted keys."""

from __future__ import annotations

from cds.engine.memo import Memo


def test_remembers_computes_once_and_stays_bounded() -> None:
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    memo: Memo[int, int] = Memo(square, 3)
    assert memo[4] == 16 and memo[4] == 16
    assert calls == [4]  # the second lookup was remembered
    for x in range(10):
        assert memo[x] == x * x
    assert 0 < len(memo) <= 3


def test_refused_keys_are_computed_every_time() -> None:
    calls: list[str] = []

    def upper(s: str) -> str:
        calls.append(s)
        return s.upper()

    memo: Memo[str, str] = Memo(upper, 8, admit=lambda s: len(s) <= 3)
    assert memo["long text"] == "LONG TEXT" and memo["long text"] == "LONG TEXT"
    assert "long text" not in memo and calls == ["long text", "long text"]
    assert memo["abc"] == "ABC" and "abc" in memo


def test_a_remembered_none_is_not_recomputed() -> None:
    calls: list[str] = []

    def nothing(s: str) -> None:
        calls.append(s)

    memo: Memo[str, None] = Memo(nothing, 8)
    assert memo["x"] is None and memo["x"] is None
    assert calls == ["x"]
