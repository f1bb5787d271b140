"""The audit queue shared by both stores: hook calls queue audit rows, a background task writes them in
batches (cds/store/sqlite.py, cds/store/postgres.py); and `within`, a timeout that does not wait for
the cancelled work to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from cds import metrics

__all__ = ["AuditQueue", "within"]

log = logging.getLogger("cds.store")

Row = TypeVar("Row")
T = TypeVar("T")

_AUDIT_BATCH_ROWS = 1000  # rows per write: a batch after an outage still ends well within a write timeout


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """`await awaitable`, or TimeoutError once `timeout_s` has passed, at that moment.

    asyncio.wait_for would wait for the cancelled awaitable to end, and psycopg answers a cancellation
    by asking the server to cancel the query (up to 10 s more when the server hangs). Here it runs as a
    task of its own, cancelled on timeout and left to end by itself (its rows are retried, not lost).
    """
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _ORPHANS.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError(f"no answer within {timeout_s:.1f} s")


_ORPHANS: set[asyncio.Future[Any]] = set()  # timed-out tasks, kept referenced until they end


def _forget(task: asyncio.Future[Any]) -> None:
    _ORPHANS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the caller has had its TimeoutError


class AuditQueue(Generic[Row]):
    """Audit rows queued by hook calls and written in batches by a background task, every `flush_s` or
    as soon as `wake_at` rows wait: a hook call never waits on the database for its audit row (they are
    not worth a round trip or an fsync each). One write at a time, so batches land in the order queued.

    No row is dropped without being counted (metrics.count_audit_lost) and logged:
    * a write that fails with one of `errors` (the database is away: a retry may succeed) or outlasts
      `write_timeout_s` puts its rows back at the head of the queue, and the task tries again after
      `flush_s`; the write must be idempotent per row (PgStore's rows carry a unique id) because a
      write that timed out may still have landed;
    * any other error means a row the database refuses: the batch is written again row by row, so one
      bad row never takes the others with it; the refused rows are lost ("rejected");
    * the queue holds at most `max_rows`; rows beyond it are lost ("queue-full");
    * `close(timeout_s)` stops the task and keeps writing until the queue is empty or the time is up;
      what is still queued then is lost ("shutdown"). A process killed hard loses its queue uncounted.
    """

    def __init__(
        self,
        write: Callable[[list[Row]], Awaitable[None]],
        flush_s: float,
        errors: tuple[type[BaseException], ...],
        *,
        max_rows: int = 10_000,
        write_timeout_s: float | None = None,
        wake_at: int = 200,
    ) -> None:
        self._write = write
        self._flush_s = flush_s
        self._retry: tuple[type[BaseException], ...] = (*errors, TimeoutError)  # rows kept, retried
        self._requeue_on: tuple[type[BaseException], ...] = (*self._retry, asyncio.CancelledError)
        self._max_rows = max_rows
        self._write_timeout_s = write_timeout_s
        self._wake_at = wake_at
        self._rows: list[Row] = []
        self._writing = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._deadline: float | None = None  # loop time by which close() gives up
        self._lost_while_full = 0  # since the queue last filled up: logged once it drains
        self._unreachable = False  # the last write failed with one of `errors` (logged once per outage)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: Row) -> None:
        if len(self._rows) >= self._max_rows:
            self._lose_full(1)
            return
        self._rows.append(row)
        if len(self._rows) >= self._wake_at and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._deadline = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="cds-audit-flush")

    async def flush(self) -> None:
        """Write the rows queued now. Raises one of the `errors` (or TimeoutError) when the database
        cannot be reached; the rows not written stay queued, in order."""
        async with self._writing:
            pending = len(self._rows)
            while pending > 0 and self._rows:
                n = min(pending, _AUDIT_BATCH_ROWS)
                batch, self._rows = self._rows[:n], self._rows[n:]
                pending -= n
                await self._write_batch(batch)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the task and write what is queued, for at most `timeout_s`; count the rest as lost."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s
        if self._task is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()  # the task ends its write (bounded by write_timeout_s), sees _stopping, ends
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:  # a write with no timeout of its own (SQLite) still running: its rows go back
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        while self._rows and self._left() > 0:
            try:
                await self.flush()
            except self._retry as exc:
                self._report_unreachable(exc)
                await asyncio.sleep(min(0.2, max(0.0, self._left())))  # it may come back in time
        if self._rows:
            lost, self._rows = len(self._rows), []
            metrics.count_audit_lost("shutdown", lost)
            log.error(
                "audit: %d rows not written within the %.1f s shutdown allowance: lost", lost, timeout_s
            )
        self._report_drained()

    def _left(self) -> float:
        if self._deadline is None:
            return float("inf")
        return self._deadline - asyncio.get_running_loop().time()

    async def _loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            self._wake.clear()
            try:
                await self.flush()
            except self._retry as exc:  # the rows are queued again
                self._report_unreachable(exc)
                if not self._stopping:  # not at once: add() keeps waking the task
                    await asyncio.sleep(self._flush_s)
            except Exception:  # a fault of ours: the trail must never stop the service
                log.exception("audit flush failed")

    async def _write_once(self, batch: list[Row]) -> None:
        timeout = min(self._write_timeout_s or float("inf"), max(0.05, self._left()))
        if timeout == float("inf"):
            await self._write(batch)
        else:
            await within(self._write(batch), timeout)

    async def _write_batch(self, batch: list[Row]) -> None:
        try:
            await self._write_once(batch)
        except self._requeue_on:
            self._requeue(batch)
            raise
        except Exception as exc:  # noqa: BLE001 - any other error is a row the database refuses
            if len(batch) == 1:
                self._lose_rejected(1, len(batch), exc)
                return
            await self._write_row_by_row(batch)
            return
        metrics.count_audit_written(len(batch))
        self._report_reachable()

    async def _write_row_by_row(self, batch: list[Row]) -> None:
        """A batch the database refused: one row at a time, so that only the bad rows are lost."""
        refused: BaseException | None = None
        lost = written = 0
        for i, row in enumerate(batch):
            try:
                await self._write_once([row])
            except self._requeue_on:
                self._requeue(batch[i:])
                metrics.count_audit_written(written, "row-by-row")
                self._lose_rejected(lost, len(batch), refused)
                raise
            except Exception as exc:  # noqa: BLE001 - this row is refused (logged by class below)
                lost += 1
                refused = exc
            else:
                written += 1
        metrics.count_audit_written(written, "row-by-row")
        self._lose_rejected(lost, len(batch), refused)
        self._report_reachable()

    def _requeue(self, batch: list[Row]) -> None:
        self._rows[:0] = batch
        over = len(self._rows) - self._max_rows
        if over > 0:  # rows added while the batch was out: the newest go, as add() would have done
            del self._rows[self._max_rows :]
            self._lose_full(over)

    def _lose_full(self, n: int) -> None:
        metrics.count_audit_lost("queue-full", n)
        if not self._lost_while_full:
            log.error(
                "audit queue full (%d rows waiting for the database): new audit rows are lost until it"
                " drains (counted in cds_audit_rows_lost_total)",
                self._max_rows,
            )
        self._lost_while_full += n

    def _lose_rejected(self, n: int, of: int, exc: BaseException | None) -> None:
        if n <= 0:
            return
        metrics.count_audit_lost("rejected", n)
        # the error's class only: its text may quote the row
        log.error("audit: %d of %d rows refused by the database (%s): lost", n, of, type(exc).__name__)

    def _report_unreachable(self, exc: BaseException) -> None:
        if not self._unreachable:
            self._unreachable = True
            log.warning(
                "audit: database unreachable (%s); %d rows queued, retrying",
                type(exc).__name__,
                len(self._rows),
            )

    def _report_reachable(self) -> None:
        if self._unreachable:
            self._unreachable = False
            log.warning("audit: database reachable again; writing %d queued rows", len(self._rows))
        self._report_drained()

    def _report_drained(self) -> None:
        if self._lost_while_full and len(self._rows) < self._max_rows:
            log.error("audit: %d rows were lost while the queue was full", self._lost_while_full)
            self._lost_while_full = 0
