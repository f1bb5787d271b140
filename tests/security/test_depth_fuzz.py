"""The fast JSON depth scanner (cds.middleware.json_depth_exceeds) agrees with a plain reference
scanner (a character-by-character state machine) on generated JSON: nested arrays/objects with strings
full of brackets, quotes and backslashes, at depths around the limit."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cds.middleware import json_depth_exceeds


def reference_depth(text: bytes) -> int:
    """Deepest nesting of [ and { outside strings, honouring backslash escapes in strings."""
    depth = best = 0
    in_string = escaped = False
    for ch in text.decode("utf-8"):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


_TEXT = st.text(alphabet=st.sampled_from(list('[]{}"\\ab/\n\u00e9\u2028 ')), max_size=12)
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), _TEXT)


def _nest(depth: int) -> st.SearchStrategy[object]:
    """A value nested exactly `depth` deep along one path, with random siblings."""
    if depth == 0:
        return _LEAF
    inner = _nest(depth - 1)
    siblings = st.lists(st.one_of(_LEAF, st.lists(_LEAF, max_size=2)), max_size=3)
    as_list = st.tuples(inner, siblings, st.integers(0, 3)).map(
        lambda t: [*t[1][: t[2]], t[0], *t[1][t[2] :]]
    )
    as_dict = st.tuples(inner, st.dictionaries(_TEXT, _LEAF, max_size=3), _TEXT).map(
        lambda t: {**t[1], "k" + t[2]: t[0]}
    )
    return st.one_of(as_list, as_dict)


_DOCS = st.integers(0, 70).flatmap(_nest) | st.recursive(
    _LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(_TEXT, c, max_size=4), max_leaves=40
)


@settings(max_examples=400, deadline=None)
@given(doc=_DOCS, limit=st.sampled_from([1, 2, 3, 8, 64]), ascii_only=st.booleans(), indent=st.booleans())
def test_fast_scanner_agrees_with_reference(doc: object, limit: int, ascii_only: bool, indent: bool) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=1 if indent else None).encode("utf-8")
    assert json_depth_exceeds(body, limit) is (reference_depth(body) > limit)


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(60, 70), pad=_TEXT)
def test_around_the_limit(depth: int, pad: str) -> None:
    doc: object = pad
    for i in range(depth):
        doc = [doc, pad] if i % 2 else {pad: doc}
    body = json.dumps(doc).encode()
    assert reference_depth(body) == depth
    assert json_depth_exceeds(body, 64) is (depth > 64)
