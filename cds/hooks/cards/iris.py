"""The PML-IRIS card: the risk, what raised it, the watch window, the steroid evidence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds.engine.domain import IrisAssessment, Note, SteroidStatement
from cds.engine.references import TAN_2011
from cds.fhir_io import LoadResult
from cds.hooks.cards.layout import EXTENSION_KEY, OVERRIDE_REASONS, CardDraft
from cds.hooks.cards.markdown import (
    card_source,
    fit_summary,
    fmt_date,
    join_names,
    md_escape,
    problems_md,
    refs_md,
    short_ref,
    unique_refs,
)
from cds.hooks.cards.washout_notes import watch_text

# each reason the engine codes (cds.engine.iris.REASON_CODES): (the finding, its short name in a summary)
_FINDING_WORDS: dict[str, tuple[str, str]] = {
    "brainstem": ("brainstem involvement", "brainstem"),
    "infratentorial": ("infratentorial involvement", "infratentorial"),
    "widespread": ("widespread PML", "widespread"),
    "enhancement": ("contrast enhancement at diagnosis", "contrast enhancement"),
}
_SITE_SEPARATOR = {"widespread": ", "}  # "bilateral, extensive"; sites read "pons; medulla"


def _findings(reasons: Iterable[Note]) -> dict[str, str]:
    """{finding: its detail}: 'brainstem involvement': 'pons; medulla', one line per finding."""
    out: dict[str, str] = {}
    for reason in reasons:
        finding = _FINDING_WORDS.get(reason.code, (reason.code, reason.code))[0]
        if reason.code == "enhancement":
            out[finding] = "earlier, more severe IRIS"
            continue
        terms = reason.values.get("terms")
        out[finding] = _SITE_SEPARATOR.get(reason.code, "; ").join(terms) if isinstance(terms, tuple) else ""
    return out


_STEROID_EVIDENCE = {
    "evidence": "Evidence (observational)",
    "case report": "Case report",
    "expert practice": "Expert practice (no single source)",
    "expert opinion": "Expert opinion only",
}


def _steroid_lines(steroids: tuple[SteroidStatement, ...]) -> str:
    lines = []
    for s in steroids:
        level = _STEROID_EVIDENCE.get(s.evidence, md_escape(s.evidence))
        ref = f" ({short_ref(s.reference)})" if s.reference is not None else ""
        lines.append(f"- **{level}:** {md_escape(s.text)}{ref}")
    return "**Steroids** (evidence level of each statement)\n\n" + "\n".join(lines)


def _iris_extension(iris: IrisAssessment) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "kind": "iris",
        "risk": iris.risk,
        "severeIrisRisk": "raised" if iris.risk == "high" else "not-raised",
        "irisOnRecord": iris.iris_on_record,
    }
    if iris.reason_codes:
        ext["reasons"] = list(iris.reason_codes)
    if iris.watch_from is not None:
        ext["watchFrom"] = iris.watch_from.date().isoformat()  # a day: the card speaks in days
    return ext


def iris_draft(iris: IrisAssessment, load: LoadResult) -> CardDraft:
    findings = _findings(iris.reasons)
    names = [_FINDING_WORDS.get(r.code, (r.code, r.code))[1] for r in iris.reasons]
    window = f"from {fmt_date(iris.watch_from)}" if iris.watch_from else ""
    if iris.iris_on_record:
        summary = fit_summary(
            f"IRIS is on record: manage as PML-IRIS during washout ({', '.join(names)})" if names else "",
            "IRIS is on record: manage as PML-IRIS during natalizumab washout",
        )
    elif iris.risk == "high":
        summary = fit_summary(
            f"Raised risk of severe PML-IRIS ({', '.join(names)}): watch closely {window}"
            if window and names
            else "",
            f"Raised risk of severe PML-IRIS ({join_names(names, 2)}): watch closely {window}"
            if window and names
            else "",
            f"Raised risk of severe PML-IRIS ({join_names(names, 1)})" if names else "",
            f"Raised risk of severe PML-IRIS: watch closely {window}" if window else "",
            "Raised risk of severe PML-IRIS after natalizumab washout: watch closely",
        )
    else:
        summary = fit_summary(
            f"IRIS follows washout in most patients; no sign of raised severe-IRIS risk: watch {window}"
            if window
            else "",
            "IRIS follows washout in most patients; no sign of raised severe-IRIS risk: watch for it",
        )
    full = []
    if not iris.pml_on_record:
        full.append("_No PML diagnosis was found on record; the assessment assumes PML as ordered._")
    if findings:
        lines = [f"- {md_escape(f)}" + (f" ({md_escape(d)})" if d else "") for f, d in findings.items()]
        full.append("**Risk of severe IRIS: raised.** Findings that raise it:\n\n" + "\n".join(lines))
    else:
        full.append("**Risk of severe IRIS: not raised by the record.** IRIS itself is still expected.")
    if window or iris.watch_notes:
        note = watch_text(iris.watch_notes)
        watch = f"**Watch:** {window + ', no end date' if window else 'see note'}" + (
            f". {md_escape(note)}" if note else ""
        )
        full.append(watch)
    if iris.steroids:
        full.append(_steroid_lines(iris.steroids))
    problems = problems_md(load)
    if problems:
        full.append("**Could not be read**\n\n" + problems)
    steroid_refs = [s.reference for s in iris.steroids if s.reference is not None]
    refs_all = unique_refs((*iris.references, *steroid_refs))
    source = card_source((*iris.references, *steroid_refs))
    if refs_all:
        full.append("**Sources**\n\n" + refs_md(refs_all))
    # the detail: what to do (watch, when), what raised the risk, PLEX's effect, one or two sources
    if iris.iris_on_record:
        todo = "**IRIS is on record:** manage it as PML-IRIS while natalizumab washes out."
    else:
        todo = (
            f"**Watch for IRIS {window}, no end date:** new or worsening deficits, new contrast enhancement or "
            "swelling on MRI."
            if window
            else "**Watch for IRIS** after natalizumab washout: new or worsening deficits, new contrast enhancement."
        )
    raised = (
        "**Risk of severe IRIS raised:** " + "; ".join(md_escape(f) for f in findings) + "."
        if findings
        else "**Risk of severe IRIS not raised by the record;** IRIS itself is still expected."
    )
    kinds = list(dict.fromkeys(_STEROID_EVIDENCE.get(s.evidence, "unrated").lower() for s in iris.steroids))
    steroid_hint = (
        f"**Steroids:** {len(iris.steroids)} statement{'s' if len(iris.steroids) != 1 else ''} "
        f"({'; '.join(kinds)}) on the full page; read them before starting."
        if iris.steroids
        else ""
    )
    cited = " and ".join(short_ref(r) for r in unique_refs((TAN_2011, *iris.references))[:2])
    short = [
        todo,
        raised,
        f"PLEX may bring IRIS sooner ({short_ref(TAN_2011)}).",
        "_No PML diagnosis was found on record; the assessment assumes PML as ordered._"
        if not iris.pml_on_record
        else "",
        steroid_hint,
        f"**Could not be read:** {len(set(load.problems)) + (1 if load.skipped else 0)} item(s), listed on the full page."
        if problems
        else "",
        f"**Sources:** {cited}." if cited else "",
    ]
    return CardDraft(
        kind="iris",
        title="PML-IRIS risk and watch window",
        fields={
            "summary": summary,
            "indicator": "warning" if iris.risk == "high" or iris.iris_on_record else "info",
            "source": source,
            "overrideReasons": list(OVERRIDE_REASONS),
            "extension": {EXTENSION_KEY: _iris_extension(iris)},
        },
        short=short,
        full=full,
    )
