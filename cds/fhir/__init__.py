"""FHIR → engine: the pure mapping of FHIR resources into the engine's facts. No I/O here; the one
module that reads FHIR (prefetch and server reads) is cds/fhir_io.py, which calls parse_resources.

    shapes.py     slim strict pydantic shapes of the fields read (TypedDicts and their TypeAdapters)
    r4b.py        full fhir.resources R4B validation (r4b_valid) and its once-per-shape memory
    terms.py      codes and text rules: what a code or a name means (levels, PLEX, drugs, status)
    values.py     numbers and units of laboratory values (grouping, decimal commas, mass concentration)
    elements.py   small readers of validated elements (CodeableConcept, dateTime, values)
    bundles.py    what each prefetch key holds (types, card label); a Bundle's resources and next link
    facts.py      parse_resources: resources → PatientFacts (Patient, Procedure, Condition handlers)
    facts_context.py, facts_observations.py, facts_medications.py   the other handlers and their state
    orders.py     plex_orders: a hook's draft ServiceRequests → PlexOrder with its PlexPlan
"""
