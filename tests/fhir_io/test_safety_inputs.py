"""Issue 15, the FHIR-input side: real-world lab and medication records never become a false level,
dose or antibody result. One section per numbered item of the issue; each test names the behaviour."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from cds.fhir.facts import parse_resources
from cds.fhir.values import Problem, parse_number
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.fhir_io.fixtures import (
    LOINC,
    NOW,
    NTZ_LEVEL_CODE,
    PATIENT,
    SNOMED,
    UCUM,
    iso,
    medication_statement,
    observation,
    procedure,
    qty,
    rx,
)

V2_0487 = "http://terminology.hl7.org/CodeSystem/v2-0487"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def parse(*resources: Any, settings: Settings | None = None) -> Any:
    return parse_resources(resources, settings or Settings(), patient_id=PATIENT, now=NOW)


def day(n: float) -> str:
    return iso(NOW - timedelta(days=n))


def only_unusable(facts: Any) -> Any:
    assert facts.levels == (), facts.levels
    (u,) = facts.unusable
    return u


# ---------------------------------------------------------------- item 2: antibodies vs JC virus


@pytest.mark.parametrize(
    "code",
    [
        {"text": "JC virus antibody index (Tysabri monitoring)"},
        {"text": "JCV antibody, natalizumab patient"},
        {"text": "STRATIFY JCV DxSelect (Tysabri)"},
        {"text": "John Cunningham virus antibodies - natalizumab treatment"},
        {"coding": [{"system": LOINC, "code": "100977-8", "display": "JC Virus Index"}], "text": "Tysabri"},
        {"coding": [{"system": LOINC, "code": "70173-0", "display": "JC Virus Antibody"}]},
    ],
)
def test_jc_virus_results_are_never_antibodies_or_levels(code: dict[str, Any]) -> None:
    for value in ({"valueString": "positive"}, {"valueQuantity": qty(3.2, "ug/mL")}):
        facts = parse(observation("jcv", code, day(2), **value)).facts
        assert facts.antibodies == () and facts.levels == () and facts.unusable == ()


@pytest.mark.parametrize(
    "text",
    [
        "Anti-natalizumab antibodies",
        "Natalizumab antibodies",
        "Antibodies to Tysabri",
        "Anti-drug antibodies (natalizumab)",
        "Natalizumab ADA",
    ],
)
def test_explicit_anti_drug_wording_is_an_antibody_result(text: str) -> None:
    facts = parse(observation("ab", {"text": text}, day(2), valueString="positive")).facts
    assert [a.positive for a in facts.antibodies] == [True]


def test_antibody_code_58012_6_is_an_antibody_result_whatever_its_text() -> None:
    code = {"coding": [{"system": LOINC, "code": "58012-6"}], "text": "Tysabri monitoring panel"}
    facts = parse(observation("ab", code, day(2), valueString="negative")).facts
    assert [a.positive for a in facts.antibodies] == [False]


@pytest.mark.parametrize(
    "code",
    [
        {"text": "Antibody panel (on Tysabri)"},
        {"text": "Anti-natalizumab antibodies / JCV index"},
        {"coding": [{"system": LOINC, "code": "100977-8"}], "text": "Anti-natalizumab antibodies"},
    ],
)
def test_an_antibody_that_is_not_clearly_anti_drug_is_named_not_used(code: dict[str, Any]) -> None:
    facts = parse(observation("x", code, day(2), valueString="positive")).facts
    assert facts.antibodies == () and facts.levels == ()
    (u,) = facts.unusable
    assert (u.kind, u.code) == ("natalizumab antibody result", "antibody-unclear")


# ---------------------------------------------------------------- item 3: doses


def administration(aid: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    r = {
        "resourceType": "MedicationAdministration",
        "id": aid,
        "status": status,
        "medicationCodeableConcept": rx("354770", "natalizumab", "Tysabri 300 mg IV"),
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    r.update(extra)
    return r


def test_prefetch_and_fhir_reads_ask_for_medication_administrations() -> None:
    templates = prefetch_templates(Settings())
    assert templates["medicationAdministrations"] == (
        "MedicationAdministration?patient={{context.patientId}}&_count=100"
    )


def test_a_completed_administration_is_a_dose_dated_by_its_end() -> None:
    facts = parse(
        administration(
            "a",
            effectivePeriod={"start": day(10.1), "end": day(10)},
            dosage={"dose": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"}},
        )
    ).facts
    (dose,) = facts.doses
    assert (dose.source, dose.given_at, dose.dose_mg, dose.date_only) == (
        "MedicationAdministration/a",
        NOW - timedelta(days=10),
        300,
        False,
    )
    (use,) = facts.medications
    assert (use.record, use.ingredient, use.active, use.last_date) == (
        "administration",
        "natalizumab",
        False,
        NOW - timedelta(days=10),
    )


@pytest.mark.parametrize(
    ("status", "dose"),
    [
        ("completed", True),
        ("in-progress", True),
        ("on-hold", True),
        ("stopped", True),  # halted before all of it was given: some drug may be in the blood
        ("unknown", True),  # the cautious reading: a level drawn before it is not "after the last dose"
        ("not-done", False),
        ("entered-in-error", False),
    ],
)
def test_administration_status_decides_whether_a_dose_was_given(status: str, dose: bool) -> None:
    facts = parse(administration("a", status, effectiveDateTime=day(5))).facts
    assert bool(facts.doses) is dose
    assert len(facts.medications) == (0 if status == "entered-in-error" else 1)


def test_in_progress_administration_without_end_is_dated_by_its_start() -> None:
    (dose,) = parse(administration("a", "in-progress", effectivePeriod={"start": day(0.02)})).facts.doses
    assert dose.given_at == NOW - timedelta(days=0.02)


def test_an_order_authored_long_ago_is_never_a_dose() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "standing",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": rx("354770", "natalizumab", "Tysabri 300 mg IV every 4 weeks"),
        "authoredOn": day(3 * 365),
    }
    facts = parse(order).facts
    assert facts.doses == ()
    (use,) = facts.medications
    assert (use.record, use.active, use.last_date) == ("request", True, NOW - timedelta(days=3 * 365))


def test_a_statement_gives_a_dose_only_from_its_end_or_date_never_its_start() -> None:
    facts = parse(
        medication_statement(
            "start-only", rx("354770", "natalizumab"), "active", effectivePeriod={"start": day(200)}
        ),
        medication_statement("dated", rx("354770", "natalizumab"), "completed", effectiveDateTime=day(30)),
    ).facts
    assert [d.source for d in facts.doses] == ["MedicationStatement/dated"]
    assert {m.record for m in facts.medications} == {"statement"}


def test_a_dose_dated_to_the_month_or_in_the_future_is_named_not_used() -> None:
    facts = parse(
        administration("month", effectiveDateTime=iso(NOW - timedelta(days=40))[:7]),
        administration("future", effectiveDateTime=day(-5)),
    ).facts
    assert facts.doses == ()
    assert sorted(u.code for u in facts.unusable) == ["date-imprecise", "future-date"]


# ---------------------------------------------------------------- item 4: specimen


@pytest.mark.parametrize(
    ("extra", "code_text", "specimen"),
    [
        ({}, "Natalizumab concentration", "unspecified"),
        ({}, "Natalizumab [Mass/volume] in Serum or Plasma", "serum"),
        ({"specimen": {"display": "Plasma"}}, "Natalizumab", "plasma"),
        (
            {
                "contained": [
                    {
                        "resourceType": "Specimen",
                        "id": "s1",
                        "type": {"coding": [{"system": SNOMED, "code": "119364003"}]},
                    }
                ],
                "specimen": {"reference": "#s1"},
            },
            "Natalizumab",
            "serum",
        ),
    ],
)
def test_serum_plasma_or_unstated_specimen_is_a_level(
    extra: dict[str, Any], code_text: str, specimen: str
) -> None:
    (level,) = parse(
        observation("o", {"text": code_text}, day(1), valueQuantity=qty(12, "ug/mL"), **extra)
    ).facts.levels
    assert level.specimen == specimen


@pytest.mark.parametrize(
    ("extra", "code_text"),
    [
        ({}, "Natalizumab, CSF"),
        ({}, "Natalizumab in cerebrospinal fluid"),
        ({}, "Natalizumab (Liquor)"),
        ({}, "Natalizumab urine"),
        ({}, "Natalizumab [Mass/volume] in Blood"),
        ({"specimen": {"display": "Cerebrospinal fluid"}}, "Natalizumab concentration"),
        ({"specimen": {"display": "CSF"}}, "Natalizumab, serum"),
        (
            {
                "contained": [
                    {
                        "resourceType": "Specimen",
                        "id": "s1",
                        "type": {"coding": [{"system": V2_0487, "code": "CSF"}]},
                    }
                ],
                "specimen": {"reference": "#s1"},
            },
            "Natalizumab",
        ),
        (
            {
                "contained": [
                    {
                        "resourceType": "Specimen",
                        "id": "s1",
                        "type": {"coding": [{"system": SNOMED, "code": "258450006"}]},
                    }
                ],
                "specimen": {"reference": "#s1"},
            },
            "Natalizumab",
        ),
    ],
)
def test_any_other_specimen_is_named_never_a_level(extra: dict[str, Any], code_text: str) -> None:
    u = only_unusable(
        parse(observation("o", {"text": code_text}, day(1), valueQuantity=qty(0.2, "ug/mL"), **extra)).facts
    )
    assert (u.kind, u.code, u.source) == ("natalizumab level", "specimen", "Observation/o")
    assert "not serum or plasma" in u.reason


# ---------------------------------------------------------------- item 5: numbers and units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12,500 ng/mL", 12.5),
        ("12 500 ng/mL", 12.5),
        ("12\u202f500 ng/mL", 12.5),
        ("1,234.5 ng/mL", 1.2345),
        ("0,5 ug/mL", 0.5),
        ("1,25 mg/L", 1.25),
        ("28 µg/mL", 28.0),
        ("28 μg/mL", 28.0),
        ("28 mcg/mL", 28.0),
        ("28 UG/ML", 28.0),
        ("28 µG/ML", 28.0),
        ("28 ug/ml", 28.0),
        ("28 MG/L", 28.0),
        ("28000 NG/ML", 28.0),
    ],
)
def test_value_strings_read_grouping_and_decimal_commas_apart(text: str, expected: float) -> None:
    (level,) = parse(observation("o", NTZ_LEVEL_CODE, day(1), valueString=text)).facts.levels
    assert level.value_ug_per_ml == pytest.approx(expected)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("1,234,567.5", 1234567.5),
        ("12,500", 12500.0),
        ("1,250", 1250.0),
        ("0,500", 0.5),
        ("1234,5", 1234.5),
        ("12 500,5", 12500.5),
        (".5", 0.5),
    ],
)
def test_parse_number_rules(token: str, expected: float) -> None:
    assert parse_number(token) == expected


@pytest.mark.parametrize("token", ["1.234,5", "12 500,500", "1,2,3", "12,50,000", "1.2.3", "\u0661", ""])
def test_parse_number_refuses_what_reads_two_ways(token: str) -> None:
    problem = parse_number(token)
    assert isinstance(problem, Problem) and problem.code == "number-format"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("1.234,5 ng/mL", "number-format"),
        ("1,234,5 ng/mL", "number-format"),
        ("1.2.3 ug/mL", "number-format"),
        ("12,50,000 ng/mL", "number-format"),
        ("\u0661\u0662 ug/mL", "number-format"),  # Arabic-Indic digits
        ("12\u0665 ug/mL", "number-format"),
        ("\u0967\u0968 ug/mL", "number-format"),  # Devanagari digits
        ("12 Mg/L", "unit-ambiguous"),
        ("12 nG/mL", "unit-ambiguous"),
        ("12", "no-unit"),
        ("12 IU/mL", "unit"),
    ],
)
def test_numbers_that_read_two_ways_are_named_not_used(text: str, code: str) -> None:
    u = only_unusable(parse(observation("o", NTZ_LEVEL_CODE, day(1), valueString=text)).facts)
    assert u.code == code and u.reported == text


@pytest.mark.parametrize(
    ("quantity", "code"),
    [
        ({"value": 28, "unit": "ug/mL", "system": UCUM, "code": "ng/mL"}, "unit-conflict"),
        ({"value": 28000, "unit": "ng/mL", "system": UCUM, "code": "ug/mL"}, "unit-conflict"),
        ({"value": 28, "unit": "IU/mL", "system": UCUM, "code": "ug/mL"}, "unit-conflict"),
        ({"value": 28, "unit": "mg/L", "system": UCUM, "code": "Mg/L"}, "unit-conflict"),
        ({"value": 28, "system": UCUM, "code": "Mg/L"}, "unit"),
        ({"value": 28, "unit": "Mg/L"}, "unit-ambiguous"),
        ({"value": 28}, "no-unit"),
    ],
)
def test_quantities_whose_units_disagree_or_are_ambiguous_are_named_not_used(
    quantity: dict[str, Any], code: str
) -> None:
    u = only_unusable(parse(observation("o", NTZ_LEVEL_CODE, day(1), valueQuantity=quantity)).facts)
    assert u.code == code


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ({"value": 28, "unit": "µg/mL", "system": UCUM, "code": "ug/mL"}, 28.0),
        ({"value": 28, "unit": "mg/L", "system": UCUM, "code": "ug/mL"}, 28.0),  # the same quantity
        ({"value": 28, "unit": "MG/L", "system": UCUM, "code": "mg/L"}, 28.0),
        ({"value": 28, "system": UCUM, "code": "mg/l"}, 28.0),  # UCUM: l and L are both litre
        ({"value": 28000, "unit": "nanograms per millilitre", "system": UCUM, "code": "ng/mL"}, 28.0),
    ],
)
def test_agreeing_unit_text_and_ucum_code_convert_once(quantity: dict[str, Any], expected: float) -> None:
    (level,) = parse(observation("o", NTZ_LEVEL_CODE, day(1), valueQuantity=quantity)).facts.levels
    assert level.value_ug_per_ml == pytest.approx(expected)


# ---------------------------------------------------------------- item 6: qualitative results

RANGE_05 = [{"high": {"value": 0.5, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"}}]


@pytest.mark.parametrize(
    "value",
    [
        {"valueString": "Not detected"},
        {"valueString": "negative"},
        {"valueString": "Undetectable"},
        {"valueString": "Below limit of quantification"},
        {"valueString": "<LLOQ"},
        {
            "valueCodeableConcept": {
                "coding": [{"system": SNOMED, "code": "260415000", "display": "Not detected"}]
            }
        },
        {"interpretation": [{"coding": [{"system": INTERPRETATION, "code": "ND"}]}]},
    ],
)
def test_a_qualitative_below_limit_result_is_a_censored_level_at_the_range_limit(
    value: dict[str, Any],
) -> None:
    (level,) = parse(observation("o", NTZ_LEVEL_CODE, day(1), referenceRange=RANGE_05, **value)).facts.levels
    assert (level.comparator, level.value_ug_per_ml) == ("<", 0.5)
    assert level.qualitative  # the lab's words, for the card


def test_a_qualitative_result_uses_the_configured_limit_without_a_reference_range() -> None:
    settings = Settings(natalizumab_assay_limit_ug_per_ml=0.2)
    obs = observation("o", NTZ_LEVEL_CODE, day(1), valueString="Not detected")
    (level,) = parse(obs, settings=settings).facts.levels
    assert (level.comparator, level.value_ug_per_ml, level.qualitative) == ("<", 0.2, "Not detected")


def test_a_qualitative_result_without_any_limit_is_named_never_dropped() -> None:
    u = only_unusable(parse(observation("o", NTZ_LEVEL_CODE, day(1), valueString="Not detected")).facts)
    assert u.code == "qualitative-no-limit" and "Not detected" in u.reason


def test_a_number_below_without_unit_takes_the_reference_range_unit() -> None:
    rr = [{"high": {"value": 100, "unit": "ng/mL", "system": UCUM, "code": "ng/mL"}}]
    (level,) = parse(
        observation("o", NTZ_LEVEL_CODE, day(1), valueString="<100", referenceRange=rr)
    ).facts.levels
    assert (level.comparator, level.value_ug_per_ml, level.qualitative) == ("<", pytest.approx(0.1), "<100")
    assert level.reported_value == 100


def test_a_number_below_without_any_unit_uses_the_configured_limit_or_is_named() -> None:
    obs = observation("o", NTZ_LEVEL_CODE, day(1), valueString="<0.1")
    (level,) = parse(obs, settings=Settings(natalizumab_assay_limit_ug_per_ml=0.5)).facts.levels
    assert (level.comparator, level.value_ug_per_ml) == ("<", 0.5)
    assert only_unusable(parse(obs).facts).code == "qualitative-no-limit"


@pytest.mark.parametrize("words", ["Detected", "Positive", "present"])
def test_a_detected_but_unquantified_result_is_named_not_used(words: str) -> None:
    u = only_unusable(
        parse(
            observation("o", NTZ_LEVEL_CODE, day(1), valueString=words, referenceRange=RANGE_05),
            settings=Settings(natalizumab_assay_limit_ug_per_ml=0.5),
        ).facts
    )
    assert u.code == "qualitative-detected"


# ---------------------------------------------------------------- item 8: date-only values


def test_levels_doses_and_sessions_given_to_the_day_carry_date_only() -> None:
    today = NOW.date().isoformat()
    facts = parse(
        observation("o", NTZ_LEVEL_CODE, today, valueQuantity=qty(12, "ug/mL")),
        administration("a", effectiveDateTime=today),
        {
            "resourceType": "Procedure",
            "id": "p",
            "status": "completed",
            "code": {"text": "Plasma exchange"},
            "performedDateTime": today,
        },
    ).facts
    assert [lv.date_only for lv in facts.levels] == [True]
    assert [d.date_only for d in facts.doses] == [True]
    assert [s.date_only for s in facts.sessions] == [True]


def test_timed_values_are_not_date_only_and_a_session_ends_at_its_period_end() -> None:
    facts = parse(
        observation("o", NTZ_LEVEL_CODE, day(1), valueQuantity=qty(12, "ug/mL")),
        procedure("p", NOW - timedelta(days=2), performedPeriod={"start": day(2), "end": day(1.9)}),
    ).facts
    assert facts.levels[0].date_only is False
    (session,) = facts.sessions
    assert (session.date_only, session.ended_at) == (False, NOW - timedelta(days=1.9))


# ---------------------------------------------------------------- item 14 (input): same-time results


def test_results_of_the_same_code_at_the_same_time_are_all_kept() -> None:
    facts = parse(
        observation("a", NTZ_LEVEL_CODE, day(1), valueQuantity=qty(30, "ug/mL")),
        observation("b", NTZ_LEVEL_CODE, day(1), valueQuantity=qty(0.3, "ug/mL")),
    ).facts
    assert sorted(lv.source for lv in facts.levels) == ["Observation/a", "Observation/b"]
    facts_reversed = parse(
        observation("b", NTZ_LEVEL_CODE, day(1), valueQuantity=qty(0.3, "ug/mL")),
        observation("a", NTZ_LEVEL_CODE, day(1), valueQuantity=qty(30, "ug/mL")),
    ).facts
    assert {lv.source for lv in facts_reversed.levels} == {lv.source for lv in facts.levels}


# ---------------------------------------------------------------- item 15: the patient


def status(oid: str, code: str, when: str, **value: Any) -> dict[str, Any]:
    return observation(oid, {"coding": [{"system": LOINC, "code": code}]}, when, **value)


def test_prefetch_reads_the_patient_and_its_status_observations() -> None:
    templates = prefetch_templates(Settings())
    assert templates["patient"] == "Patient/{{context.patientId}}"
    assert templates["patientStatus"] == (
        "Observation?patient={{context.patientId}}&code=http://loinc.org|82810-3,"
        "http://loinc.org|63895-7,http://loinc.org|29463-7&_sort=-date&_count=20"
    )


@pytest.mark.parametrize(
    ("birth", "expected"), [("2009-05-17", date(2009, 5, 17)), ("2009", date(2009, 12, 31))]
)
def test_birth_date_is_read_a_partial_one_as_its_last_day(birth: str, expected: date) -> None:
    facts = parse({"resourceType": "Patient", "id": PATIENT, "birthDate": birth}).facts
    assert facts.patient.birth_date == expected


def test_another_patients_record_is_left_out() -> None:
    out = parse({"resourceType": "Patient", "id": "someone-else", "birthDate": "2010-01-01"})
    assert out.other_patient == 1 and out.facts.patient.birth_date is None


@pytest.mark.parametrize(
    ("value", "pregnant"),
    [
        ({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006"}]}}, True),
        (
            {
                "valueCodeableConcept": {
                    "coding": [{"system": LOINC, "code": "LA15173-0", "display": "Pregnant"}]
                }
            },
            True,
        ),
        (
            {
                "valueCodeableConcept": {
                    "coding": [{"system": LOINC, "code": "LA26683-5", "display": "Not pregnant"}]
                }
            },
            False,
        ),
        ({"valueCodeableConcept": {"text": "Not pregnant"}}, False),
        ({"valueString": "pregnant, 12 weeks"}, True),
        (
            {
                "valueCodeableConcept": {
                    "coding": [{"system": LOINC, "code": "LA4489-6", "display": "Unknown"}]
                }
            },
            None,
        ),
    ],
)
def test_pregnancy_status_observation(value: dict[str, Any], pregnant: bool | None) -> None:
    facts = parse(status("p", "82810-3", day(3), **value)).facts
    assert facts.patient.pregnant is pregnant
    assert facts.patient.pregnancy_source == ("Observation/p" if pregnant is not None else "")


@pytest.mark.parametrize(
    ("value", "breastfeeding"),
    [
        ({"valueBoolean": True}, True),
        ({"valueBoolean": False}, False),
        ({"valueCodeableConcept": {"text": "Not breastfeeding"}}, False),
        ({"valueCodeableConcept": {"text": "Breastfeeding"}}, True),
    ],
)
def test_breastfeeding_status_observation(value: dict[str, Any], breastfeeding: bool) -> None:
    assert parse(status("b", "63895-7", day(3), **value)).facts.patient.breastfeeding is breastfeeding


def test_the_latest_pregnancy_status_decides_and_an_active_pregnancy_condition_wins() -> None:
    older = status("old", "82810-3", day(200), valueCodeableConcept={"text": "Pregnant"})
    newer = status("new", "82810-3", day(3), valueCodeableConcept={"text": "Not pregnant"})
    assert parse(older, newer).facts.patient.pregnant is False
    condition = {
        "resourceType": "Condition",
        "id": "preg",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]},
    }
    details = parse(older, newer, condition).facts.patient
    assert (details.pregnant, details.pregnancy_source) == (True, "Condition/preg")


@pytest.mark.parametrize(
    "condition",
    [
        {"code": {"text": "Pregnancy"}, "clinicalStatus": {"coding": [{"code": "resolved"}]}},
        {"code": {"text": "Pregnancy"}, "verificationStatus": {"coding": [{"code": "refuted"}]}},
        {"code": {"text": "Not pregnant"}},
        {"code": {"text": "History of pregnancy"}},
    ],
)
def test_inactive_refuted_negated_or_past_pregnancy_conditions_do_not_count(
    condition: dict[str, Any],
) -> None:
    facts = parse({"resourceType": "Condition", "id": "c", **condition}).facts
    assert facts.patient.pregnant is None


@pytest.mark.parametrize(
    ("quantity", "kg"),
    [
        ({"value": 70, "unit": "kg", "system": UCUM, "code": "kg"}, 70.0),
        ({"value": 70000, "unit": "g", "system": UCUM, "code": "g"}, 70.0),
        ({"value": 154, "unit": "lbs", "system": UCUM, "code": "[lb_av]"}, 154 * 0.45359237),
    ],
)
def test_body_weight_is_converted_to_kg(quantity: dict[str, Any], kg: float) -> None:
    details = parse(status("w", "29463-7", day(2), valueQuantity=quantity)).facts.patient
    assert details.weight_kg == pytest.approx(kg) and details.weight_at == NOW - timedelta(days=2)


def test_the_latest_body_weight_is_used_and_a_wrong_unit_is_named() -> None:
    facts = parse(
        status(
            "w1", "29463-7", day(30), valueQuantity={"value": 80, "unit": "kg", "system": UCUM, "code": "kg"}
        ),
        status(
            "w2", "29463-7", day(2), valueQuantity={"value": 72, "unit": "kg", "system": UCUM, "code": "kg"}
        ),
        status(
            "w3", "29463-7", day(1), valueQuantity={"value": 72, "unit": "cm", "system": UCUM, "code": "cm"}
        ),
    ).facts
    assert facts.patient.weight_kg == 72
    assert [(u.kind, u.source) for u in facts.unusable] == [("body weight", "Observation/w3")]


def test_a_statement_whose_period_ends_in_the_future_is_a_plan_not_a_dose() -> None:
    facts = parse(
        medication_statement(
            "plan",
            rx("354770", "natalizumab"),
            "active",
            effectivePeriod={"start": day(100), "end": day(-60)},
        )
    ).facts
    assert facts.doses == () and facts.unusable == ()


@pytest.mark.parametrize(
    ("status", "dose"),
    [("completed", True), ("unknown", True), ("intended", False), ("not-taken", False)],
)
def test_statement_status_decides_whether_its_date_is_a_dose(status: str, dose: bool) -> None:
    facts = parse(
        medication_statement("s", rx("354770", "natalizumab"), status, effectiveDateTime=day(9))
    ).facts
    assert bool(facts.doses) is dose
