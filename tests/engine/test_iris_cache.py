"""The IRIS text scan is cached per text: a cached answer equals a fresh scan, and the cache stays bounded."""

from __future__ import annotations

from cds.engine import iris

TEXTS = (
    "Right frontal subcortical T2/FLAIR lesion, unilobar; no gadolinium enhancement",
    "Large lesion in the pons; parieto-occipital spread, bilateral; faint enhancement",
    "no brainstem involvement, sparing the pons",
)


def test_cached_findings_equal_a_fresh_scan() -> None:
    iris._FINDINGS_CACHE.clear()
    for text in TEXTS:
        first = iris._text_findings(text)
        assert iris._text_findings(text) is first  # second call: from the cache
        assert first == iris._scan(text)


def test_cache_is_bounded() -> None:
    iris._FINDINGS_CACHE.clear()
    for i in range(2100):
        iris._text_findings(f"lesion {i} in the pons")
    assert 0 < len(iris._FINDINGS_CACHE) <= 2048
    assert iris._text_findings("lesion 5 in the pons") == iris._scan("lesion 5 in the pons")
