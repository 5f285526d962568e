"""kombu's Redis transport with every queue entry checked before kombu or Celery parse it.

kombu parses an entry as soon as BRPOP (or RPOP, when polling) has taken it off the list, and
an entry it cannot parse ends the worker (celery#4308, kombu#2421). Here the Redis client
kombu uses checks each entry it takes with :func:`poundcam.broker.envelope.check_entry`: a
refused entry goes to the dead-letter list with its reason, is counted and logged once, and
kombu sees an empty poll instead; the worker goes on consuming. The check sits on the client
because that is the one place both of kombu's read paths pass the raw bytes through.

Selected by the worker's Celery app with ``broker_transport`` (producers keep kombu's own).
"""

from __future__ import annotations

import logging

import redis
from kombu.transport import redis as kombu_redis

from poundcam.broker import deadletters
from poundcam.broker.envelope import check_entry
from poundcam.settings import Settings

log = logging.getLogger(__name__)

PREVIEW_BYTES = 200  # of a refused entry, in its one log line


class EntryGuard:
    """Decides what happens to one raw entry: delivered, or dead-lettered."""

    def __init__(self, settings: Settings, on_refused=None):
        self.max_bytes = settings.max_message_bytes
        self.max_dead_letters = settings.dead_letter_max
        self.max_dead_letter_bytes = settings.dead_letter_max_bytes
        self.on_refused = on_refused  # called with the reason (metrics)

    def admit(self, client: redis.Redis, queue: str, raw: bytes) -> bool:
        refusal = check_entry(raw, self.max_bytes)
        if refusal is None:
            return True
        record = deadletters.make_record(raw, refusal.reason, refusal.detail, queue)
        deadletters.push(
            redis.Redis(connection_pool=client.connection_pool),
            record,
            self.max_dead_letters,
            self.max_dead_letter_bytes,
        )
        log.error(
            "queue entry refused (%s, %d bytes), dead letter %s: %s; entry starts %r",
            refusal.reason,
            len(raw),
            record["id"],
            refusal.detail,
            raw[:PREVIEW_BYTES],
            extra={"reason": refusal.reason, "dead_letter": record["id"]},
        )
        if self.on_refused is not None:
            self.on_refused(refusal.reason)
        return False


class GuardedRedis(redis.Redis):
    """The Redis client of the guarded channel: BRPOP and RPOP replies are checked."""

    guard: EntryGuard | None = None

    def parse_response(self, connection, command_name, **options):
        response = super().parse_response(connection, command_name, **options)
        if command_name == "BRPOP" and response:
            queue, raw = response
            if not self._admit(queue, raw):
                return None  # kombu reads an empty poll and issues the next BRPOP
        return response

    def rpop(self, name, count=None):
        raw = super().rpop(name, count)
        if count is None and raw is not None and not self._admit(name, raw):
            return None
        return raw

    def _admit(self, queue, raw) -> bool:
        if self.guard is None:
            return True
        queue = queue.decode("utf-8", "replace") if isinstance(queue, bytes) else str(queue)
        raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        # kombu's priority lists are "<queue><sep><n>": a requeued entry goes back to <queue>
        return self.guard.admit(self, queue.split(kombu_redis.Channel.sep, 1)[0], raw)


class GuardedChannel(kombu_redis.Channel):
    def _get_client(self):
        base = super()._get_client()
        if base is not redis.Redis:  # a global key prefix: kombu's own prefixed client
            raise RuntimeError("the guarded Redis transport does not support global_keyprefix")
        return GuardedRedis


class GuardedTransport(kombu_redis.Transport):
    """kombu's Redis transport whose channels check every entry they take."""

    Channel = GuardedChannel


def install_guard(guard: EntryGuard) -> None:
    """Make every guarded client of this process use ``guard``."""
    GuardedRedis.guard = guard
