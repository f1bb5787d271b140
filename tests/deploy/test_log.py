"""cds/log.py: JSON lines with context ids, and the credential safety net."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds.log import configure_logging, log_context, redact

_NAMES = ("cds", "uvicorn", "uvicorn.error", "uvicorn.access")
_JWT = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJodHRwczovL2VociJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Configure cds logging into a buffer; restore the process's logging state afterwards."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {n: (lg.level, lg.propagate, list(lg.handlers)) for n in _NAMES if (lg := logging.getLogger(n))}
    configure_logging("DEBUG")
    buf = io.StringIO()
    (handler,) = logging.getLogger("cds").handlers  # one "json" handler, shared with uvicorn and root
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    try:
        yield buf
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, (level, propagate, handlers) in saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers


def _records(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_object_per_line_with_context_and_extras(lines: io.StringIO) -> None:
    log = logging.getLogger("cds.access")
    with log_context(hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", service_id="pml-plex-select"):
        log.info("hook", extra={"status": 200, "ms": 12.5, "cards": 3})
    log.warning("outside %s", "context")
    first, second = _records(lines)
    assert first["msg"] == "hook" and first["level"] == "INFO" and first["logger"] == "cds.access"
    assert first["hookInstance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert first["serviceId"] == "pml-plex-select"
    assert (first["status"], first["ms"], first["cards"]) == (200, 12.5, 3)
    assert str(first["ts"]).endswith("Z")
    assert second["msg"] == "outside context" and "hookInstance" not in second


def test_context_does_not_leak_between_concurrent_tasks(lines: io.StringIO) -> None:
    # A plain test driving its own loop: it needs no asyncio plugin or asyncio_mode, so it passes the
    # same when run alone, from another directory or under another ini (an `async def` test is not
    # run at all without pytest-asyncio in auto mode).
    log = logging.getLogger("cds.hooks")
    n = 10

    async def main() -> None:
        inside = 0
        all_inside = asyncio.Event()

        async def call(hook_instance: str) -> None:
            nonlocal inside
            with log_context(hook_instance=hook_instance, service_id="s"):
                inside += 1
                if inside == n:
                    all_inside.set()
                await all_inside.wait()  # every task is inside its own context at once
                log.info("done")
            log.info("after")

        await asyncio.gather(*(call(f"h{i}") for i in range(n)))

    asyncio.run(main())
    records = _records(lines)
    done = sorted(str(r["hookInstance"]) for r in records if r["msg"] == "done")
    assert done == sorted(f"h{i}" for i in range(n))
    assert all("hookInstance" not in r for r in records if r["msg"] == "after")


def test_tokens_are_redacted_in_message_args_and_extras(lines: io.StringIO) -> None:
    log = logging.getLogger("cds.fhir_io")
    log.info("calling with Authorization: Bearer abc.def-123", extra={"header": f"Bearer {_JWT}"})
    log.info("token %s", _JWT)
    log.info('body {"access_token": "s3cr3t-value", "expires_in": 300}')
    log.info("db postgresql://cds:hunter2@db:5432/cds")
    text = lines.getvalue()
    for secret in ("abc.def-123", _JWT, "s3cr3t-value", "hunter2"):
        assert secret not in text
    recs = _records(lines)
    assert recs[0]["header"] == "Bearer [redacted]"
    assert recs[1]["msg"] == "token [redacted]"
    assert "expires_in" in str(recs[2]["msg"])  # only the secret goes
    assert recs[3]["msg"] == "db postgresql://cds:[redacted]@db:5432/cds"


def test_exceptions_carry_type_and_trace_but_not_the_message(lines: io.StringIO) -> None:
    name = "Jane " + "Doe"  # built at run time, as PHI would be, so no source line holds it
    try:
        raise ValueError(f"patient {name}, level 3.1")
    except ValueError:
        logging.getLogger("cds.app").exception("unexpected error")
    (rec,) = _records(lines)
    assert rec["exc"]["type"] == "ValueError"  # type: ignore[index]
    assert "Jane Doe" not in json.dumps(rec)


def test_uvicorn_loggers_share_the_format(lines: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process")  # the same handler as "cds"
    assert _records(lines)[-1]["logger"] == "uvicorn.error"


def test_redact_keeps_ordinary_text() -> None:
    text = "hook pml-plex-select took 12 ms, 3 cards, Patient/123 level 2.4 ug/mL"
    assert redact(text) == text


def test_extras_orjson_cannot_write_are_written_by_json(lines: io.StringIO) -> None:
    """Each line is one JSON object whatever the extras hold: the values orjson refuses (non-str keys,
    integers beyond 64 bits, lone surrogates) are written by the stdlib encoder, datetimes and other
    objects by str(), and redaction still applies to string extras."""
    log = logging.getLogger("cds.access")
    when = datetime(2026, 11, 28, 14, 30, tzinfo=UTC)
    log.info("a", extra={"when": when, "obj": Path("/x"), "count": 3})
    log.info("b", extra={"by_code": {1: "one"}})
    log.info("c", extra={"big": 2**70})
    log.info("d", extra={"text": "bad \ud800 surrogate"})
    log.info("e", extra={"header": "Bearer abc.def", "n": float("nan")})
    a, b, c, d, e = _records(lines)
    assert (a["when"], a["obj"], a["count"]) == (str(when), "/x", 3)
    assert b["by_code"] == {"1": "one"}
    assert c["big"] == 2**70
    assert d["text"] == "bad \ud800 surrogate"
    assert e["header"] == "Bearer [redacted]" and e["n"] is None  # NaN is not JSON: written as null
