"""Writes taps to Kafka exactly once: group-committed Kafka transactions, claims in Redis,
and a commit log that settles any claim whose fate is unknown.

One writer per ingest process takes the batches every stream hands it, in arrival order,
and writes them together, one Kafka transaction at a time (while one commits, the next
batches gather: group commit). For each transaction T:

1. claim every tap's (device id, sequence number) in Redis with T's token (Lua, one round
   trip): a pair already accepted is a duplicate; a pair held by another write in flight
   makes its batch wait for that write (briefly) before it is tried again;
2. in one transaction: the new taps on `taps`, the batches' dead letters, and T's token on
   the commit log (`ingest.txns`);
3. commit; then turn T's claims into accepted ones; then acknowledge.

A transaction that fails is aborted: read_committed consumers never see its records, the
claims are dropped and the batches answered UNAVAILABLE, so the device resends them. When
the outcome is unknown (Kafka went away during the commit), the writer starts a new
producer with the same transactional id, which makes Kafka finish or abort the old
transaction, and then reads the commit log: T's token there means T committed (claims
accepted), absent means it did not (claims dropped). A claim left pending by a process that
died is settled the same way by whichever process next meets it, once Kafka's
transaction timeout guarantees that transaction is over. Redis failing after the commit
loses nothing: the taps are in Kafka, and the claims are settled from the commit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.exceptions import RedisError

from clearway.errors import ClearwayError, ErrorKind
from clearway.kafka import client_options, publish_many
from services.ingest.adapters.dedup import Claimed, Pair, TapClaims

log = logging.getLogger(__name__)

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


class KafkaUnavailableError(ClearwayError):
    """Kafka did not durably take the batch; the validator must resend it."""

    code = "KAFKA_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class DedupUnavailableError(ClearwayError):
    """Redis (the duplicate check) did not answer; nothing of the batch was written."""

    code = "DEDUP_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class TapInFlightError(ClearwayError):
    """A tap of the batch is being written by another attempt whose outcome is not known
    yet; nothing of the batch was written: resend it shortly."""

    code = "TAP_IN_FLIGHT"
    kind = ErrorKind.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class TapToWrite:
    """An accepted tap: its claim pair and its record on the taps topic."""

    pair: Pair
    message: Message


@dataclass(slots=True)
class _Write:
    taps: list[TapToWrite]
    dead_letters: list[Message]
    future: asyncio.Future[list[bool]]
    deadline: float
    waiting_on: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Token:
    """A transaction's token: writer (transactional id), producer session, number, and when
    its claims were made (ms since the epoch)."""

    writer: str
    session: str
    number: int
    claimed_ms: int

    def __str__(self) -> str:
        return f"P{self.writer}|{self.session}|{self.number}|{self.claimed_ms}"

    @classmethod
    def parse(cls, text: str) -> Token | None:
        """The token in a claim's value; None when it is not one."""
        if not text.startswith("P"):
            return None
        parts = text[1:].split("|")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


class CommitLog:
    """The `ingest.txns` topic: the token of every committed transaction (one partition)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic

    def marker(self, token: Token) -> Message:
        """The record that says `token`'s transaction committed."""
        return (token.writer.encode(), str(token).encode(), [])

    async def committed(self, tokens: Sequence[Token]) -> set[Token]:
        """Which of `tokens` committed. Only meaningful once their transactions are over
        (fenced, or past Kafka's transaction timeout): reads committed records only."""
        if not tokens:
            return set()
        wanted = {str(t): t for t in tokens}
        since = min(t.claimed_ms for t in tokens) - 60_000
        consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap),
            enable_auto_commit=False,
            isolation_level="read_committed",
            group_id=None,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            start = (await consumer.offsets_for_times({tp: since})).get(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            if start is None:
                return set()
            consumer.seek(tp, start.offset)
            found: set[Token] = set()
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for record in batch.get(tp, []):
                    token = wanted.get(record.value.decode()) if record.value else None
                    if token is not None:
                        found.add(token)
            return found
        finally:
            await consumer.stop()


class TapWriter:
    """Group-committed, exactly-once writes of taps (and dead letters) to Kafka."""

    def __init__(
        self,
        *,
        bootstrap: str,
        transactional_id: str,
        taps_topic: str,
        dead_letter_topic: str,
        claims: TapClaims,
        commit_log: CommitLog,
        max_txn_taps: int = 2_000,
        in_flight_wait_s: float = 3.0,
        transaction_timeout_ms: int = 10_000,
        commit_timeout_s: float = 5.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.taps_topic = taps_topic
        self.dead_letter_topic = dead_letter_topic
        self.claims = claims
        self.commit_log = commit_log
        self.max_txn_taps = max_txn_taps
        self.in_flight_wait_s = in_flight_wait_s
        self.transaction_timeout_ms = transaction_timeout_ms
        self.commit_timeout_s = commit_timeout_s
        # A pending claim of another process is settled from the commit log only once its
        # transaction is surely over: Kafka aborts a transaction older than its timeout.
        self.stale_after_ms = transaction_timeout_ms + 10_000
        self._queue: deque[_Write] = deque()
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._session = ""
        self._number = 0
        self._outcomes: dict[str, bool] = {}  # recent tokens of this writer: committed?
        self._unknown: list[tuple[Token, list[Pair]]] = []  # fates to settle after a fence
        self._task: asyncio.Task[None] | None = None
        self._resolving: set[str] = set()
        self._current: list[_Write] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.stats = {"transactions": 0, "taps": 0, "duplicates": 0, "aborted": 0}

    async def start(self) -> None:
        """Start the transactional producer (fencing any earlier one of the same id)."""
        await self._new_producer()
        self._task = asyncio.create_task(self._run(), name="ingest tap writer")

    async def stop(self) -> None:
        """Finish the transaction in hand, refuse what is queued, stop the producer."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        stopping = KafkaUnavailableError("ingest is stopping; resend the batch")
        for w in self._current:
            _fail(w, stopping)
        self._fail_queued(stopping)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 5)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writer loop (health watches it)."""
        return self._task

    async def write(self, taps: list[TapToWrite], dead_letters: list[Message]) -> list[bool]:
        """Write `taps` and `dead_letters` exactly once; per tap True when written now,
        False when it was already in Kafka (a duplicate). Raises KafkaUnavailableError,
        DedupUnavailableError or TapInFlightError: then nothing of the call was written."""
        if not taps and not dead_letters:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._queue.append(_Write(taps, dead_letters, future, loop.time() + self.in_flight_wait_s))
        self._wake.set()
        # The write goes on even if the caller goes away (a stream cut off mid-batch): its
        # claims are then settled, and the resend is answered DUPLICATE, not written twice.
        return await asyncio.shield(future)

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            if self._producer is None:
                await self._recover()
                continue
            writes = await self._take()
            if not writes:
                continue
            self._current = writes
            try:
                await self._transaction(writes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tap writer transaction failed")
                for w in writes:
                    _fail(w, KafkaUnavailableError("write failed; resend the batch"))
            finally:
                self._current = []

    async def _take(self) -> list[_Write]:
        while not self._queue and not self._stopping:
            self._wake.clear()
            await self._wake.wait()
        writes: list[_Write] = []
        count = 0
        while self._queue and (not writes or count + len(self._queue[0].taps) <= self.max_txn_taps):
            w = self._queue.popleft()
            if w.future.done():
                continue
            writes.append(w)
            count += len(w.taps)
        return writes

    def _next_token(self) -> Token:
        self._number += 1
        return Token(self.transactional_id, self._session, self._number, int(time.time() * 1000))

    async def _transaction(self, writes: list[_Write]) -> None:
        token = self._next_token()
        pairs = [t.pair for w in writes for t in w.taps]
        try:
            claims = await self.claims.claim(pairs, str(token))
        except (RedisError, OSError) as exc:
            log.warning("dedup store unavailable", extra={"error": type(exc).__name__})
            for w in writes:
                _fail(w, DedupUnavailableError("resend the batch"))
            return
        ready, statuses = await self._sort_claims(writes, claims, token)
        if not ready:
            return
        held = [
            t.pair for w in ready for t, new in zip(w.taps, statuses[id(w)], strict=True) if new
        ]
        outcome = await self._commit(token, ready, statuses)
        if outcome is None:  # unknown: settled after the producer is fenced
            self._unknown.append((token, held))
            for w in ready:
                _fail(w, KafkaUnavailableError("Kafka did not confirm the write; resend"))
            return
        self._remember(token, outcome)
        with contextlib.suppress(RedisError, OSError):
            await self.claims.settle(held, str(token), accepted=outcome)
        if not outcome:
            for w in ready:
                _fail(w, KafkaUnavailableError("Kafka did not take the batch; resend it"))
            return
        self.stats["transactions"] += 1
        for w in ready:
            new = statuses[id(w)]
            self.stats["taps"] += sum(new)
            self.stats["duplicates"] += len(new) - sum(new)
            if not w.future.done():
                w.future.set_result(new)

    async def _sort_claims(
        self, writes: list[_Write], claims: list[Claimed], token: Token
    ) -> tuple[list[_Write], dict[int, list[bool]]]:
        """The writes that can go into this transaction and, per write, which taps are new;
        writes that meet a claim in flight elsewhere give theirs back and wait."""
        ready: list[_Write] = []
        statuses: dict[int, list[bool]] = {}
        i = 0
        for w in writes:
            mine = claims[i : i + len(w.taps)]
            i += len(w.taps)
            blocked = [
                (t.pair, c.holder)
                for t, c in zip(w.taps, mine, strict=True)
                if not (c.new or c.accepted)
            ]
            if blocked:
                held = [t.pair for t, c in zip(w.taps, mine, strict=True) if c.new]
                with contextlib.suppress(RedisError, OSError):
                    await self.claims.settle(held, str(token), accepted=False)
                await self._settle_blocked(blocked)
                self._retry_later(w)
                continue
            statuses[id(w)] = [c.new for c in mine]
            ready.append(w)
        return ready, statuses

    async def _settle_blocked(self, blocked: list[tuple[Pair, str]]) -> None:
        """Settle claims whose writer's fate is known (this writer's own, remembered) and
        start settling stale ones of other writers from the commit log."""
        by_holder: dict[str, list[Pair]] = {}
        for pair, holder in blocked:
            by_holder.setdefault(holder, []).append(pair)
        now_ms = int(time.time() * 1000)
        for holder, pairs in by_holder.items():
            known = self._outcomes.get(holder)
            if known is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.claims.settle(pairs, holder, accepted=known)
                continue
            token = Token.parse(holder)
            if token is None or holder in self._resolving:
                continue
            mine = token.writer == self.transactional_id and token.session == self._session
            if not mine and now_ms - token.claimed_ms > self.stale_after_ms:
                self._resolving.add(holder)
                task = asyncio.create_task(self._resolve_stale(token, pairs))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _resolve_stale(self, token: Token, pairs: list[Pair]) -> None:
        try:
            committed = token in await self.commit_log.committed([token])
            await self.claims.settle(pairs, str(token), accepted=committed)
            log.info(
                "settled a claim left pending",
                extra={"writer": token.writer, "committed": committed, "taps": len(pairs)},
            )
        except Exception as exc:
            log.warning("could not settle a pending claim yet", extra={"error": type(exc).__name__})
        finally:
            self._resolving.discard(str(token))

    def _retry_later(self, w: _Write) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= w.deadline:
            _fail(w, TapInFlightError("a tap of this batch is still being written; resend it"))
            return

        def requeue() -> None:
            self._queue.append(w)
            self._wake.set()

        loop.call_later(0.05, requeue)

    async def _commit(
        self, token: Token, writes: list[_Write], statuses: dict[int, list[bool]]
    ) -> bool | None:
        """Run the Kafka transaction: True committed, False aborted, None unknown."""
        producer = self._producer
        assert producer is not None
        taps = [
            t.message for w in writes for t, new in zip(w.taps, statuses[id(w)], strict=True) if new
        ]
        letters = [m for w in writes for m in w.dead_letters]

        async def transaction() -> None:
            await producer.begin_transaction()
            await publish_many(producer, self.taps_topic, taps)
            await publish_many(producer, self.dead_letter_topic, letters)
            await publish_many(producer, self.commit_log.topic, [self.commit_log.marker(token)])
            await producer.commit_transaction()

        try:
            # Bounded: with Kafka away the producer would retry for as long as it is away,
            # and validators would wait without an answer; they get UNAVAILABLE instead.
            await asyncio.wait_for(transaction(), self.commit_timeout_s)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("kafka transaction failed", extra={"error": type(exc).__name__})
        try:
            await asyncio.wait_for(producer.abort_transaction(), 5)
            self.stats["aborted"] += 1
            return False
        except Exception:
            # Not known whether the commit happened: fence, then read the commit log.
            self._producer = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2)
            return None

    def _remember(self, token: Token, committed: bool) -> None:
        self._outcomes[str(token)] = committed
        if len(self._outcomes) > 10_000:
            for key in list(self._outcomes)[:5_000]:
                del self._outcomes[key]

    async def _recover(self) -> None:
        """A new producer (fencing the old transaction), then the fates of the unknown
        transactions from the commit log; until then every batch is answered UNAVAILABLE."""
        delay = 0.2
        while not self._stopping:
            self._fail_queued(KafkaUnavailableError("Kafka is unavailable; resend the batch"))
            try:
                await self._new_producer()
                unknown, self._unknown = self._unknown, []
                committed = await self.commit_log.committed([t for t, _ in unknown])
                for token, pairs in unknown:
                    self._remember(token, token in committed)
                    with contextlib.suppress(RedisError, OSError):
                        await self.claims.settle(pairs, str(token), accepted=token in committed)
                log.info("tap writer recovered", extra={"settled": len(unknown)})
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tap writer cannot reach Kafka", extra={"error": type(exc).__name__})
                if self._producer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._producer.stop(), 2)
                    self._producer = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _new_producer(self) -> None:
        producer = AIOKafkaProducer(
            **client_options(self.bootstrap),
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.transaction_timeout_ms,
            linger_ms=0,
            request_timeout_ms=5_000,
        )
        try:
            await asyncio.wait_for(producer.start(), 15)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2)
            raise
        self._producer = producer
        self._session = secrets.token_hex(4)
        self._number = 0

    def _fail_queued(self, error: Exception) -> None:
        while self._queue:
            _fail(self._queue.popleft(), error)


def _fail(w: _Write, error: Exception) -> None:
    if not w.future.done():
        w.future.set_exception(error)
