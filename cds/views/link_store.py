"""What a hook call keeps for later, under short-lived keys: the inputs of the estimate card's chart and
each card's full page (under random opaque ids, for the links on the cards), and what order-select
showed (under a digest key, for cds.hooks.repeats).

    open_link_store(settings, redis) -> LinkStore     made in the app's lifespan
    await store.put_chart(inputs) -> id | None         None: no link (full, or Redis away)
    await store.chart(id) -> ChartInputs | None        None: unknown or expired (the route's 404)
    await store.put_page(page) -> id | None;  await store.page(id) -> CardPage | None
    await store.remember(key, value, ttl_s);  await store.recall(key) -> str | None

An id is `secrets.token_urlsafe(32)` (no patient id, no values in a URL); chart inputs and pages live
`ttl_s` seconds. A link that was handed out is never evicted before its time: when `MemoryLinkStore` is
full of live links, `put_chart` returns None and the card goes out without that link (issue 18: the
oldest link used to be evicted, so a link 404'd after 2,048 newer calls, well inside its 15 minutes).

`MemoryLinkStore` is per process: with several workers a link opens only on the worker that made it.
With CDS_REDIS_URL set, `RedisLinkStore` keeps everything on the worker's one Redis client
(cds.shared_redis): chart inputs as JSON under `<prefix>chart:<id>`, pages under `<prefix>page:<id>`,
memories under `<prefix>shown:<key>`, so a link made by one replica opens on any other. If Redis cannot
be written the card goes out without its link (never a link that would 404); if it cannot be read the
link answers 404 and order-sign shows every card; the shared breaker keeps an outage to one timeout.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fastapi import Request
from pydantic import TypeAdapter

from cds.engine.domain import PlexEstimate, PlexSession
from cds.settings import Settings
from cds.shared_redis import SharedRedis

__all__ = [
    "LINK_TTL_S",
    "CardPage",
    "ChartInputs",
    "LinkStore",
    "MemoryLinkStore",
    "RedisLinkStore",
    "dumps_inputs",
    "link_store",
    "loads_inputs",
    "open_link_store",
]

log = logging.getLogger("cds.views.links")

LINK_TTL_S = 900.0  # a card's links open for 15 minutes (clarifications.md)
PAGES_PER_CHART = 3  # a hook call keeps one chart and a full page per card (three cards)


@dataclass(frozen=True, slots=True)
class ChartInputs:
    """What `render_svg` needs; kept in a store only, never in a URL or a log."""

    estimate: PlexEstimate
    sessions: tuple[PlexSession, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class CardPage:
    """A card's full page (cds.views.pages renders it at `/cards/{id}`)."""

    title: str
    markdown: str
    made_at: str  # ISO 8601, when the card was made

    def dumps(self) -> str:
        return json.dumps({"title": self.title, "markdown": self.markdown, "made_at": self.made_at})

    @classmethod
    def loads(cls, raw: str | bytes) -> CardPage:
        d = json.loads(raw)
        return cls(title=str(d["title"]), markdown=str(d["markdown"]), made_at=str(d["made_at"]))


class LinkStore(Protocol):
    async def put_chart(self, inputs: ChartInputs) -> str | None: ...
    async def chart(self, cid: str) -> ChartInputs | None: ...
    async def put_page(self, page: CardPage) -> str | None: ...
    async def page(self, cid: str) -> CardPage | None: ...
    async def remember(self, key: str, value: str, ttl_s: float) -> None: ...
    async def recall(self, key: str) -> str | None: ...


_V = typing.TypeVar("_V")


class _Expiring(typing.Generic[_V]):
    """A bounded map whose entries expire; used under the store's lock.

    Entries are kept in the order they were put. `purge` drops expired entries from the oldest end
    only (a few per call, not a scan of thousands): exact for links, which all live `ttl_s`; a memory
    with a shorter life may wait behind a longer one, and `get` still never returns it.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, _V]] = OrderedDict()

    def purge(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def put_new(self, value: _V, expires: float, now: float) -> str | None:
        """Under a fresh random id; None when full of live entries (a live one is never evicted)."""
        self.purge(now)
        if len(self._entries) >= self.max_entries:
            return None
        cid = secrets.token_urlsafe(32)
        self._entries[cid] = (expires, value)
        return cid

    def put(self, key: str, value: _V, expires: float, now: float) -> None:
        """Under `key`, replacing; when full, the oldest entries go (a memory, not a link)."""
        self.purge(now)
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (expires, value)

    def get(self, key: str, now: float) -> _V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= now:
            del self._entries[key]
            return None
        return found[1]

    def items(self, now: float) -> dict[str, _V]:
        return {k: v for k, (expires, v) in self._entries.items() if expires > now}


class MemoryLinkStore:
    """Per process, bounded, thread-safe; `clock` is injectable (tests age the entries)."""

    def __init__(
        self,
        ttl_s: float = LINK_TTL_S,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._charts: _Expiring[ChartInputs] = _Expiring(max_entries)
        self._pages: _Expiring[CardPage] = _Expiring(PAGES_PER_CHART * max_entries)
        self._memories: _Expiring[str] = _Expiring(max_entries)
        self._lock = threading.Lock()
        self._full_logged = float("-inf")

    def live_charts(self) -> int:
        """How many chart links are live now."""
        with self._lock:
            self._charts.purge(self._clock())
            return len(self._charts)

    async def put_chart(self, inputs: ChartInputs) -> str | None:
        now = self._clock()
        with self._lock:
            cid = self._charts.put_new(inputs, now + self.ttl_s, now)
        if cid is None and now - self._full_logged >= 60:
            self._full_logged = now
            log.warning(
                "link store full (%d live chart links, CDS_CHART_MAX_ENTRIES); cards go without a chart "
                "link until older links expire",
                self.max_entries,
            )
        return cid

    async def chart(self, cid: str) -> ChartInputs | None:
        with self._lock:
            return self._charts.get(cid, self._clock())

    async def put_page(self, page: CardPage) -> str | None:
        now = self._clock()
        with self._lock:
            return self._pages.put_new(page, now + self.ttl_s, now)

    async def page(self, cid: str) -> CardPage | None:
        with self._lock:
            return self._pages.get(cid, self._clock())

    async def remember(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        now = self._clock()
        with self._lock:
            self._memories.put(key, value, now + ttl_s, now)

    async def recall(self, key: str) -> str | None:
        with self._lock:
            return self._memories.get(key, self._clock())

    def memories(self) -> dict[str, str]:
        """Every live memory (key -> value): what order-sign may compare against, for inspection."""
        with self._lock:
            return self._memories.items(self._clock())


# ---------------------------------------------------------------- shared store (Redis)


# pydantic reads and writes the frozen dataclasses by their type hints (datetimes as ISO 8601)
_CHART_INPUTS = TypeAdapter(ChartInputs)


def dumps_inputs(inputs: ChartInputs) -> str:
    return _CHART_INPUTS.dump_json(inputs).decode()


def loads_inputs(text: str | bytes) -> ChartInputs:
    return _CHART_INPUTS.validate_json(text)


class RedisLinkStore:
    """Everything in Redis (`SET <prefix><kind>:<id> <value> PX ttl`), shared by workers and replicas.

    No size bound here: Redis's own memory policy and the TTL bound it.
    """

    def __init__(self, redis: SharedRedis, ttl_s: float = LINK_TTL_S) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self._redis = redis
        self._chart_prefix = redis.prefix + "chart:"
        self._page_prefix = redis.prefix + "page:"
        self._memory_prefix = redis.prefix + "shown:"

    async def _put_new(self, prefix: str, value: str, what: str) -> str | None:
        cid = secrets.token_urlsafe(32)
        stored = await self._redis.set(prefix + cid, value, self.ttl_s, f"card without its {what}")
        return cid if stored else None

    async def put_chart(self, inputs: ChartInputs) -> str | None:
        return await self._put_new(self._chart_prefix, dumps_inputs(inputs), "chart link")

    async def chart(self, cid: str) -> ChartInputs | None:
        raw = await self._redis.get(self._chart_prefix + cid, "chart link answers 404")
        if raw is None:
            return None
        try:
            return loads_inputs(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("link store: unreadable chart entry ignored")
            return None

    async def put_page(self, page: CardPage) -> str | None:
        return await self._put_new(self._page_prefix, page.dumps(), "page link")

    async def page(self, cid: str) -> CardPage | None:
        raw = await self._redis.get(self._page_prefix + cid, "page link answers 404")
        if raw is None:
            return None
        try:
            return CardPage.loads(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("link store: unreadable page ignored")
            return None

    async def remember(self, key: str, value: str, ttl_s: float) -> None:
        await self._redis.set(self._memory_prefix + key, value, ttl_s, "nothing remembered")

    async def recall(self, key: str) -> str | None:
        raw = await self._redis.get(self._memory_prefix + key, "nothing recalled")
        return None if raw is None else raw.decode()


def open_link_store(settings: Settings, redis: SharedRedis | None) -> LinkStore:
    """Redis when the lifespan made the shared client (CDS_REDIS_URL), else the in-process store."""
    if redis is not None:
        return RedisLinkStore(redis)
    return MemoryLinkStore(max_entries=settings.chart_max_entries)


def link_store(request: Request) -> LinkStore:
    """The lifespan's store, for the link routes (cds/app.py yields it in the lifespan state as `links`)."""
    store: LinkStore = request.state.links
    return store
