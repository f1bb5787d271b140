"""The card text helpers (md_escape, fmt_num, fmt_date) against plain reference versions of their rules."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

from cds.hooks.cards import fmt_date, fmt_num, md_escape

# the reference: one str.translate (control characters dropped, & < > as entities, the markdown
# specials safety needs escaped: emphasis, code, links, images, strikethrough, table cells), bare-URL
# patterns broken, whitespace collapsed, then a block opener at the start escaped (issue 17: dates and
# parentheses stay plain)
_TABLE = str.maketrans(
    {
        **{c: None for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)},
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        **{c: "\\" + c for c in "\\`*_[]|~"},
    }
)


def _md_escape_reference(text: object) -> str:
    s = str(text).translate(_TABLE).replace("://", "\\://").replace("www.", "www\\.")
    s = " ".join(s.split())
    if s[:1] in ("#", "=", "+", "-") and s:
        return "\\" + s
    m = re.match(r"(\d+)([.)])", s)
    return m[1] + "\\" + m[2] + s[m.end() :] if m else s


def test_md_escape_equals_the_reference_on_random_text() -> None:
    rnd = random.Random(20240510)
    alphabet = [chr(i) for i in range(0x80)] + ["\xa0", "\u2003", "\x85", "\u2028", "é", "µ", "&amp;", "\\\\"]
    for _ in range(20000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        assert md_escape(s) == _md_escape_reference(s), repr(s)


def test_md_escape_equals_the_reference_on_every_character() -> None:
    for i in range(0x3100):
        s = f" a{chr(i)}b{chr(i)}{chr(i)} "
        assert md_escape(s) == _md_escape_reference(s), hex(i)
    for obj in (None, 1.5, 3, ["a_b"]):
        assert md_escape(obj) == _md_escape_reference(obj)


def test_md_escape_examples() -> None:
    assert md_escape("**bold** <b>x</b> & [link](u)\n# h") == (
        "\\*\\*bold\\*\\* &lt;b&gt;x&lt;/b&gt; &amp; \\[link\\](u) # h"
    )
    assert md_escape("a\\b\x00c\x7f  \t d") == "a\\\\bc d"


def test_fmt_date_equals_strftime() -> None:
    east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))
    for dt in (
        datetime(2024, 5, 10, 23, 30, tzinfo=west),
        datetime(2024, 5, 10, 1, 30, tzinfo=east),
        datetime(1000, 1, 1, 1, tzinfo=east),  # 999-12-31 in UTC: strftime does not pad the year
        datetime(5, 3, 4, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
    ):
        assert fmt_date(dt) == dt.astimezone(UTC).strftime("%Y-%m-%d")
    assert fmt_date(None) == "unknown date"


def test_md_escape_of_a_long_text_equals_the_reference() -> None:
    long_text = "a_b " * 400
    assert md_escape(long_text) == md_escape(long_text) == _md_escape_reference(long_text)
    text = "Steroids (IV) *pulse* & <taper>"
    assert md_escape(text) == md_escape(text) == _md_escape_reference(text)


def _fmt_num_reference(x: float) -> str:
    ax = abs(x)
    s = f"{x:.0f}" if ax >= 10 else f"{x:.1f}" if ax >= 1 else f"{x:.2f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def test_fmt_num_equals_the_reference() -> None:
    rnd = random.Random(20261128)
    values: list[float] = [0.0, -0.0, 0.0, -0.0, 1, True, 10, 0.005, -0.005, 9.95, 9.96, 0.995, float("inf")]
    values += [rnd.choice((1, -1)) * rnd.random() * 10 ** rnd.randint(-3, 4) for _ in range(5000)]
    for x in values:
        assert fmt_num(x) == _fmt_num_reference(x), repr(x)
    assert fmt_num(-0.0) == "-0" and fmt_num(0.0) == "0"


def test_fmt_date_is_the_utc_day_of_any_zone() -> None:
    rnd = random.Random(20261129)
    zones = [UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))]
    start = datetime(1990, 1, 1, tzinfo=UTC)
    stamps = [start + timedelta(seconds=rnd.randint(0, 40 * 365 * 86400)) for _ in range(3000)]
    for t in stamps:
        for z in zones:  # the same instants in other zones: the same UTC day
            dt = t.astimezone(z)
            assert fmt_date(dt) == dt.astimezone(UTC).strftime("%Y-%m-%d")
