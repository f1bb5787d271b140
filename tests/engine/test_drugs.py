"""Drug identification and classes (codes.md §4-5, clinical-reference §5.2)."""

from __future__ import annotations

import pytest

from cds.engine.domain import MedicationUse, NatalizumabDose, NatalizumabLevel, PatientFacts, UnusableValue
from cds.engine.drugs import ALLOWED, AVOID, CONDITIONAL, drug_class, has_natalizumab_exposure, identify

from .conftest import NOW

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tysabri 300 mg/15 mL IV", "natalizumab"),  # codes.md §5
        ("natalizumab-sztn", "natalizumab"),  # biosimilar PIN rolls up to IN (NLM Tech Bull 2017)
        ("Tyruko", "natalizumab"),
        ("NATALIZUMAB", "natalizumab"),
        ("Gilenya 0.5 mg capsule", "fingolimod"),
        ("Mayzent", "siponimod"),
        ("Zeposia", "ozanimod"),
        ("Ponvory", "ponesimod"),
        ("Ocrevus", "ocrelizumab"),
        ("Kesimpta pen", "ofatumumab"),
        ("Rituxan", "rituximab"),
        ("Lemtrada", "alemtuzumab"),
        ("Mavenclad", "cladribine"),
        ("Novantrone", "mitoxantrone"),
        ("Aubagio 14 mg", "teriflunomide"),
        ("Tecfidera 240 mg", "dimethyl fumarate"),
        ("Vumerity", "diroximel fumarate"),
        ("Bafiertam", "monomethyl fumarate"),
        ("Avonex", "interferon beta-1a"),
        ("Rebif", "interferon beta-1a"),
        ("Betaseron", "interferon beta-1b"),
        ("Extavia", "interferon beta-1b"),
        ("Plegridy 125 mcg", "peginterferon beta-1a"),
        ("peginterferon beta-1a", "peginterferon beta-1a"),
        ("IFN-beta-1b", "interferon beta-1b"),
        ("interferon beta", "interferon beta"),
        ("Copaxone 40 mg", "glatiramer acetate"),
        ("mycophenolate mofetil", "mycophenolic acid"),
        ("Imuran", "azathioprine"),
        ("cyclophosphamide", "cyclophosphamide"),
        ("methotrexate 15 mg weekly", "methotrexate"),
        ("paracetamol", None),
        ("", None),
    ],
)
def test_identify_from_text(text: str, expected: str | None) -> None:
    assert identify((), text) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("354770", "natalizumab"),  # codes.md §4
        ("1012892", "fingolimod"),
        ("2121085", "siponimod"),  # corrected value (codes.md), not the recalled 2121097
        ("2288236", "ozanimod"),
        ("2261783", "diroximel fumarate"),
        ("1373478", "dimethyl fumarate"),
        ("214582", "glatiramer acetate"),
        ("3002", "cyclophosphamide"),
        ("7145", "mycophenolic acid"),
    ],
)
def test_identify_from_rxnorm_code(code: str, expected: str) -> None:
    assert identify(((RX, code),), "something unrelated") == expected


def test_code_of_another_system_is_ignored() -> None:
    assert identify((("http://snomed.info/sct", "354770"),), "") is None


@pytest.mark.parametrize("code", ["72257", "75917"])
def test_interferon_conflict_resolved_by_text(code: str) -> None:
    # codes.md §4: 72257/75917 pairing disputed; name from text when it says which.
    assert identify(((RX, code),), "Betaseron") == "interferon beta-1b"
    assert identify(((RX, code),), "Avonex 30 mcg") == "interferon beta-1a"
    assert identify(((RX, code),), "") == "interferon beta"
    assert drug_class(identify(((RX, code),), "")) == "allowed"  # type: ignore[arg-type]


def test_classes_match_clinical_reference() -> None:
    assert {drug_class(x) for x in ALLOWED} == {"allowed"}
    assert {drug_class(x) for x in CONDITIONAL} == {"conditional"}
    assert {drug_class(x) for x in AVOID} == {"avoid"}
    for name in ("fingolimod", "ocrelizumab", "natalizumab", "teriflunomide", "cladribine", "azathioprine"):
        assert drug_class(name) == "avoid"
    assert drug_class("dimethyl fumarate") == "conditional"
    assert drug_class("methylprednisolone") is None  # not a DMT
    assert drug_class("paracetamol") is None


def test_class_sets_do_not_overlap() -> None:
    assert not (set(ALLOWED) & set(CONDITIONAL) or set(ALLOWED) & set(AVOID) or set(CONDITIONAL) & set(AVOID))


def test_exposure_from_each_kind_of_record() -> None:
    assert not has_natalizumab_exposure(PatientFacts())
    med = MedicationUse(ingredient=None, text="Tysabri", active=False)
    assert has_natalizumab_exposure(PatientFacts(medications=(med,)))
    assert has_natalizumab_exposure(PatientFacts(levels=(NatalizumabLevel(5.0, NOW),)))
    assert has_natalizumab_exposure(PatientFacts(doses=(NatalizumabDose(NOW),)))
    bad = UnusableValue(kind="natalizumab level", reason="unit 'IU/mL' is not a mass concentration")
    assert has_natalizumab_exposure(PatientFacts(unusable=(bad,)))
    other = UnusableValue(kind="lymphocyte count", reason="percent")
    assert not has_natalizumab_exposure(PatientFacts(unusable=(other,)))
    assert not has_natalizumab_exposure(
        PatientFacts(medications=(MedicationUse("fingolimod", "Gilenya", True),))
    )
