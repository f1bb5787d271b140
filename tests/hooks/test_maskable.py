"""r4b.maskable(resource) is exactly `shape_key(resource) is not None` on plain JSON values."""

from __future__ import annotations

import itertools

from cds.fhir import r4b
from cds.hooks import cards


def test_maskable_agrees_with_shape_key() -> None:
    patients = ["p1", "abc-123.x", "A" * 64, "A" * 65, "bad id!", ""]
    times = [
        "2025-03-14T09:26:53Z",
        "2025-03-14T09:26:53.123456+02:00",
        "2025-02-30T09:26:53Z",
        "2025-03-14",
        "x",
    ]
    for patient, authored in itertools.product(patients, times):
        for ingredient in ("glatiramer acetate", "x"):
            resource = cards._medication_resource(patient, ingredient, authored)
            assert r4b.maskable(resource) == (r4b.shape_key(resource) is not None)
    assert not r4b.maskable([]) and not r4b.maskable({"resourceType": 1})
