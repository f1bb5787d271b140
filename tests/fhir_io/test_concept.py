"""cds.fhir.elements.concept_of reads a CodeableConcept in one pass exactly as codings_of and texts_of do."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds.fhir.elements import codings_of, concept_of, texts_of

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
    assert concept_of(cc) == (codings_of(cc), texts_of(cc))
