"""fhir_io._concept reads a CodeableConcept in one pass exactly as _codings and _texts do."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds import fhir_io

_str = st.one_of(st.none(), st.sampled_from(["", "a", "http://loinc.org", "731-0", "Natalizumab"]))
_coding = st.dictionaries(st.sampled_from(["system", "code", "display"]), _str)
_cc = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["text", "coding"]), _str).map(
        lambda d: {k: v for k, v in d.items() if k != "coding"}
    ),
    st.builds(lambda text, coding: {"text": text, "coding": coding}, _str, st.lists(_coding, max_size=4)),
    st.builds(lambda coding: {"coding": coding}, st.lists(_coding, max_size=4)),
)


@settings(max_examples=2000, deadline=None)
@given(_cc)
def test_concept_is_codings_and_texts(cc: Any) -> None:
    assert fhir_io._concept(cc) == (fhir_io._codings(cc), fhir_io._texts(cc))
