"""A hypothesis strategy for JSON values, shared by the tests of the JSON reader and writer."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(*, null: bool = True, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """JSON values whose integers fit in 64 bits (beyond that orjson reads floats: HookRequest.from_body);
    without `null`, no None anywhere (what CdsResponse.to_json hands an encoder)."""
    scalars = (
        st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    return st.recursive(
        st.none() | scalars if null else scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=max_leaves,
    )
