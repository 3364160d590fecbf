"""Follows canaryd's control topic with confluent-kafka (librdkafka)."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .table import Change, Ignored, Refused, State, Stats, Table

DEFAULT_TOPIC = "canary.control"
DEFAULT_ACKS_TOPIC = "canary.acks"
MAX_ROUTER_BYTES = 256

log = logging.getLogger("canaryd_router")


class Subscriber:
    """Reads the control topic from the start, without a consumer group (every
    router needs every command): first to the end offsets the topic had when
    bootstrap() began (on the compacted topic, the latest command of each
    rollout), then whatever comes, applying each record through a Table.

    Unlike the Go Subscriber, which treats a missing topic as empty and
    follows it once it appears, bootstrap() waits for the topic to exist
    (canaryd creates it when it starts) and reads the partitions it has then:
    the control topic has one.

    state, states, assign and stats are safe to call from any thread.
    on_change(Change) and on_refused(message, exception) are called from the
    thread that runs bootstrap/poll/run, in topic order.

        sub = Subscriber("kafka:9092", signing_key=key)
        sub.start()                  # a daemon thread: bootstrap, then follow
        sub.ready.wait(30)
        version = sub.assign("support-agent", session_id, {"user_tier": tier})

    Acknowledgements (like the Go library's Acks and Apply options): with
    router_id set, every applied command is acknowledged on acks_topic
    (schemas/ack.v1.json, key = rollout) once on_change has returned and
    apply(Change), when given, has returned without raising; an exception
    from apply means not applied, and no ack. Acks are produced
    asynchronously (librdkafka retries them, idempotently); stop() flushes
    them for up to ack_flush_timeout seconds. ack_stats() counts them.
    """

    def __init__(self, brokers: str, topic: str = DEFAULT_TOPIC, signing_key: Optional[bytes] = None,
                 on_change: Optional[Callable[[Change], Any]] = None,
                 on_refused: Optional[Callable[[Any, Exception], Any]] = None,
                 config: Optional[Mapping[str, Any]] = None, clock: Callable[[], float] = time.time,
                 router_id: Optional[str] = None, acks_topic: str = DEFAULT_ACKS_TOPIC,
                 apply: Optional[Callable[[Change], Any]] = None, ack_flush_timeout: float = 5.0):
        conf = {
            "bootstrap.servers": brokers,
            # librdkafka wants a group id; it is never joined (assign, no subscribe) nor committed to.
            "group.id": "canaryd-router",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
        conf.update(config or {})
        self.topic = topic
        self.table = Table(signing_key)
        self.ready = threading.Event()
        self._on_change, self._on_refused, self._clock = on_change, on_refused, clock
        self._consumer = Consumer(conf)
        if router_id is not None and not (0 < len(router_id.encode()) <= MAX_ROUTER_BYTES):
            raise ValueError(f"router_id must be 1..{MAX_ROUTER_BYTES} bytes")
        self.router_id, self.acks_topic, self._apply_fn = router_id, acks_topic or DEFAULT_ACKS_TOPIC, apply
        self._ack_flush = ack_flush_timeout
        self._producer = None
        if router_id is not None:
            pconf = {k: v for k, v in conf.items() if k not in (
                "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset")}
            pconf["enable.idempotence"] = True
            self._producer = Producer(pconf)
        self._acks_lock = threading.Lock()
        self._acks = {"sent": 0, "failed": 0, "not_applied": 0}
        self._end: dict = {}  # partition -> end offset still to reach in the bootstrap
        self._replay_to: dict = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[Exception] = None  # what ended run(), if anything
        self._closed = False

    # -- reading -----------------------------------------------------------

    def bootstrap(self, timeout: float = 30.0) -> None:
        """Assigns every partition of the topic from its start and reads up to
        the end offsets it has now; sets ready. Raises TimeoutError when the
        topic cannot be listed or read to its end within timeout."""
        deadline = time.monotonic() + timeout
        parts = None
        while parts is None:
            md = self._consumer.list_topics(self.topic, timeout=max(0.1, deadline - time.monotonic()))
            t = md.topics.get(self.topic)
            if t is not None and t.error is None and t.partitions:
                parts = sorted(t.partitions)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"control topic {self.topic!r} not available: {t.error if t else 'missing'}")
            else:
                time.sleep(0.1)
        for p in parts:
            lo, hi = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                          timeout=max(0.1, deadline - time.monotonic()))
            if hi > lo:
                self._end[p] = hi
        self._replay_to = dict(self._end)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        while self._end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"control topic {self.topic!r} not read to its end in {timeout}s: {self._end}")
            self.poll(0.2)
        self.ready.set()

    def poll(self, timeout: float = 1.0) -> int:
        """Reads and applies what is there (waiting up to timeout); returns the
        number of records read."""
        msgs = self._consumer.consume(num_messages=500, timeout=timeout)
        n = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("fetch control topic %s: %s", self.topic, err)
                continue
            n += 1
            self._apply(m)
            end = self._end.get(m.partition())
            if end is not None and m.offset() + 1 >= end:
                del self._end[m.partition()]
        return n

    def _apply(self, m) -> None:
        try:
            ch = self.table.apply(m.key(), m.value(), self._clock())
        except (Refused, Ignored) as e:
            if self._on_refused:
                self._on_refused(m, e)
            return
        if m.offset() < self._replay_to.get(m.partition(), 0):
            ch = Change(command=ch.command, prev=ch.prev, state=ch.state, replay=True)
        if self._on_change:
            self._on_change(ch)
        if self._apply_fn is not None:
            try:
                self._apply_fn(ch)
            except Exception as e:  # not applied: no ack
                self._count("not_applied")
                log.warning("command not applied: not acknowledged: rollout %s seq %d: %s",
                            ch.state.rollout, ch.state.seq, e)
                return
        if self._producer is not None:
            self._ack(ch.state)

    def _ack(self, s: State) -> None:
        applied = datetime.datetime.fromtimestamp(s.applied_at, datetime.timezone.utc)
        value = json.dumps({
            "command_id": s.command_id, "rollout": s.rollout, "seq": s.seq, "weight": s.weight,
            "action": s.action, "router": self.router_id,
            "applied_at": applied.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }, separators=(",", ":"), ensure_ascii=False).encode()

        def done(err, msg):
            if err is not None:
                self._count("failed")
                log.warning("ack not published: rollout %s seq %d: %s", s.rollout, s.seq, err)
            else:
                self._count("sent")

        self._producer.produce(self.acks_topic, key=s.rollout.encode(), value=value, on_delivery=done)
        self._producer.poll(0)  # serve the delivery callbacks of earlier acks

    def _count(self, what: str) -> None:
        with self._acks_lock:
            self._acks[what] += 1

    def ack_stats(self) -> dict:
        """Counts of the acks: sent (the broker has them), failed, not_applied."""
        if self._producer is not None:
            self._producer.poll(0)
        with self._acks_lock:
            return dict(self._acks)

    def run(self, bootstrap_timeout: float = 30.0) -> None:
        """bootstrap(), then poll until stop() is called. An exception that
        ends it (a bootstrap timeout, a fatal client error) is also kept in
        self.error, for the thread of start()."""
        try:
            self.bootstrap(bootstrap_timeout)
            while not self._stop.is_set():
                self.poll(0.2)
        except Exception as e:
            self.error = e
            log.error("control topic subscriber stopped: %s", e)
            raise

    def start(self, bootstrap_timeout: float = 30.0) -> threading.Thread:
        """Runs run() in a daemon thread; stop() ends it."""
        self._thread = threading.Thread(target=self.run, args=(bootstrap_timeout,), name="canaryd-router", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ends run (waiting for its thread) and closes the consumer. Idempotent;
        state, states, assign and stats still answer afterwards."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._closed = True
        self._consumer.close()
        if self._producer is not None:
            left = self._producer.flush(self._ack_flush)
            if left:
                log.warning("%d acks not flushed before close", left)

    # -- state -------------------------------------------------------------

    def state(self, rollout: str) -> Optional[State]:
        return self.table.state(rollout)

    def states(self) -> list:
        return self.table.states()

    def assign(self, rollout: str, key: str, attrs: Optional[Mapping[str, str]] = None) -> str:
        return self.table.assign(rollout, key, attrs)

    def stats(self) -> Stats:
        return self.table.stats()
