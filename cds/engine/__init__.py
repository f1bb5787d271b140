"""The pure clinical engine: PLEX sessions remaining, IRIS risk, rebound-safe DMT choice.

No I/O, no clock (`now` is passed in), no logging, no web or FHIR imports. Inputs and outputs are the
frozen dataclasses of `cds.engine.domain`; formulas, parameters and sources are in docs/clinical-model.md.
"""

from cds.engine.dmt import advise_dmt
from cds.engine.drugs import drug_class, has_natalizumab_exposure, identify
from cds.engine.iris import assess_iris
from cds.engine.pk import DEFAULT_TARGET_UG_PER_ML
from cds.engine.remaining import estimate_remaining
from cds.engine.units import from_10e9_per_l, from_ug_per_ml, to_10e9_per_l, to_ug_per_ml

__all__ = [
    "DEFAULT_TARGET_UG_PER_ML",
    "advise_dmt",
    "assess_iris",
    "drug_class",
    "estimate_remaining",
    "from_10e9_per_l",
    "from_ug_per_ml",
    "has_natalizumab_exposure",
    "identify",
    "to_10e9_per_l",
    "to_ug_per_ml",
]
