"""The worker's side of RabbitMQ: topology, consuming, replying, acking.

The only module of rdb_worker that imports pika. Its connection belongs to the thread
that calls ``run_io`` (pika's BlockingConnection is not thread-safe and only heartbeats
inside its own I/O loop); the batch thread hands replies and acks back through
``add_callback_threadsafe``, so a long transaction never starves the heartbeat.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from rdb_client.exceptions import TransportError
from rdb_client.transport import connection_parameters
from rdb_client.protocol import CONTENT_TYPE, BrokerNames
from rdb_worker import failpoints, recording

log = logging.getLogger(__name__)

DEFAULT_DELIVERY_LIMIT = 5
DEFAULT_PREFETCH_COUNT = 1
IO_TICK_S = 0.1
SENT_AT_HEADER = "x-rdb-sent-at-ms"


@dataclass(frozen=True)
class Delivery:
    """One received batch message, with what the worker needs to judge and answer it."""

    body: bytes
    delivery_tag: int
    reply_to: str | None
    correlation_id: str | None
    message_id: str | None
    redelivered: bool
    delivery_count: int
    sent_at_s: float | None
    expiration_ms: int | None
    connection_epoch: int

    def expired(self, now_s: float | None = None) -> bool:
        """True when the sender's deadline has passed (the queue's TTL only drops heads)."""
        if self.sent_at_s is None or self.expiration_ms is None:
            return False
        return (now_s if now_s is not None else time.time()) > self.sent_at_s + self.expiration_ms / 1000.0


def queue_arguments(names: BrokerNames, delivery_limit: int) -> dict[str, Any]:
    """The request queue's final shape: RabbitMQ refuses to change it after the first declare."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-routing-key": names.dead_letter_queue,
        "x-delivery-limit": delivery_limit,
    }


def declare_topology(
    channel: BlockingChannel,
    names: BrokerNames,
    delivery_limit: int,
    record_arguments: dict[str, Any] | None = None,
) -> None:
    """Declare every broker object a queue name needs; idempotent for the same arguments.

    The record stream is declared by workers only and written by them after they answer,
    so clients still publish to a queue that exists only when a worker declared it:
    ``mandatory`` keeps reporting a missing worker queue at once.
    """
    if record_arguments is not None:
        channel.queue_declare(names.record_stream, durable=True, arguments=record_arguments)
    channel.exchange_declare(names.dead_letter_exchange, exchange_type="direct", durable=True)
    channel.queue_declare(names.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(names.dead_letter_queue, names.dead_letter_exchange, routing_key=names.dead_letter_queue)
    channel.exchange_declare(names.exchange, exchange_type="direct", durable=True)
    channel.queue_declare(names.queue, durable=True, arguments=queue_arguments(names, delivery_limit))
    channel.queue_bind(names.queue, names.exchange, routing_key=names.routing_key)


class Consumer:
    """One connection, one channel, consuming the request queue."""

    def __init__(
        self,
        amqp_url: str | Sequence[str],
        names: BrokerNames,
        *,
        prefetch_count: int = DEFAULT_PREFETCH_COUNT,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        record_arguments: dict[str, Any] | None = None,
    ) -> None:
        self.params = connection_parameters(amqp_url)
        self.record_arguments = record_arguments
        self.names = names
        self.prefetch_count = prefetch_count
        self.delivery_limit = delivery_limit
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_tag: str | None = None
        self.epoch = 0  # bumped per connection: acks never cross into a new connection

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    def connect(self) -> None:
        try:
            self._connection = pika.BlockingConnection(self.params)
            self._channel = self._connection.channel()
            declare_topology(self._channel, self.names, self.delivery_limit, self.record_arguments)
            self._channel.basic_qos(prefetch_count=self.prefetch_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            if exc.reply_code == 403:
                raise TransportError(
                    f"broker refused the topology of queue {self.names.queue!r}: {exc.reply_text} "
                    "(the worker's broker user lacks configure/write/read permission on these names: "
                    "see docs/operations.md)"
                ) from exc
            raise TransportError(
                f"broker refused the topology of queue {self.names.queue!r}: {exc.reply_text} "
                "(a queue's arguments can't change after it is declared: delete it or pick another name)"
            ) from exc
        except (pika.exceptions.AMQPError, OSError) as exc:  # OSError: a failed TLS handshake
            self.close()
            raise TransportError(f"cannot connect to the broker: {exc!r}") from exc
        self.epoch += 1

    def start_consuming(self, on_delivery: Callable[[Delivery], None]) -> None:
        assert self._channel is not None
        epoch = self.epoch

        def callback(_ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
            headers = props.headers or {}
            sent_at = headers.get(SENT_AT_HEADER)
            try:
                expiration_ms = int(props.expiration) if props.expiration else None
            except ValueError:
                expiration_ms = None
            on_delivery(
                Delivery(
                    body=body,
                    delivery_tag=method.delivery_tag,
                    reply_to=props.reply_to,
                    correlation_id=props.correlation_id,
                    message_id=props.message_id,
                    redelivered=bool(method.redelivered),
                    delivery_count=int(headers.get("x-delivery-count", 0) or 0),
                    sent_at_s=sent_at / 1000.0 if isinstance(sent_at, int) else None,
                    expiration_ms=expiration_ms,
                    connection_epoch=epoch,
                )
            )

        self._consumer_tag = self._channel.basic_consume(self.names.queue, callback, auto_ack=False)

    def stop_consuming(self) -> None:
        """No new deliveries; those already received are still answered."""
        if self._channel is not None and self._channel.is_open and self._consumer_tag:
            try:
                self._channel.basic_cancel(self._consumer_tag)
            except pika.exceptions.AMQPError:
                pass
            self._consumer_tag = None

    def process_events(self, time_limit_s: float = IO_TICK_S) -> None:
        assert self._connection is not None
        try:
            self._connection.process_data_events(time_limit=time_limit_s)
        except pika.exceptions.AMQPError as exc:
            raise TransportError(f"lost the broker connection: {exc!r}") from exc

    def call_threadsafe(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the I/O thread; False when the connection is gone."""
        connection = self._connection
        if connection is None or not connection.is_open:
            return False
        try:
            connection.add_callback_threadsafe(fn)
        except Exception:  # noqa: BLE001 - closed underneath us: the message will be redelivered
            return False
        return True

    # The methods below run on the I/O thread only.
    def finish(self, delivery: Delivery, reply: bytes | None) -> None:
        """Publish the reply (if anyone asked for one) and then ack: at-least-once."""
        if delivery.connection_epoch != self.epoch or self._channel is None or not self._channel.is_open:
            log.info("dropping ack of delivery %s from a closed connection; it will be redelivered", delivery.delivery_tag)
            return
        if reply is not None and delivery.reply_to:
            self._publish_reply(delivery, reply)
        failpoints.hit("after_reply")
        self._channel.basic_ack(delivery.delivery_tag)

    def reject(self, delivery: Delivery, *, requeue: bool, reply: bytes | None = None) -> None:
        """Refuse a delivery; without requeue it goes to the dead-letter queue.

        ``reply``, if given, is still sent first: a client that waits learns why.
        """
        if delivery.connection_epoch != self.epoch or self._channel is None or not self._channel.is_open:
            return
        if reply is not None and delivery.reply_to:
            self._publish_reply(delivery, reply)
        self._channel.basic_reject(delivery.delivery_tag, requeue=requeue)

    def record(self, delivery: Delivery, reply: bytes, kind: str | None, worker: str) -> None:
        """Append the batch and its reply to the record stream (for rdb-replay)."""
        if self.record_arguments is None or delivery.connection_epoch != self.epoch:
            return
        if self._channel is None or not self._channel.is_open:
            return
        batch_id = delivery.message_id or delivery.correlation_id or ""
        self._channel.basic_publish(
            exchange="",
            routing_key=self.names.record_stream,
            body=recording.encode_record(batch_id, kind, worker, delivery.correlation_id, delivery.body, reply),
            properties=BasicProperties(
                message_id=batch_id, correlation_id=delivery.correlation_id, content_type=CONTENT_TYPE,
                timestamp=int(time.time()), delivery_mode=2,
            ),
        )

    def _publish_reply(self, delivery: Delivery, reply: bytes) -> None:
        assert self._channel is not None
        self._channel.basic_publish(
            exchange="",
            routing_key=delivery.reply_to or "",
            body=reply,
            properties=BasicProperties(
                correlation_id=delivery.correlation_id, content_type=CONTENT_TYPE, delivery_mode=1
            ),
        )

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it's gone either way
                pass




def read_stream(
    amqp_url: str | Sequence[str],
    stream: str,
    *,
    offset: int | str | datetime.datetime = "first",
    idle_timeout_s: float = 1.5,
    prefetch_count: int = 200,
) -> Iterator[tuple[int | None, bytes]]:
    """Yield (stream offset, body) from ``offset`` until the stream has nothing new for
    ``idle_timeout_s``. ``offset``: "first", "last", "next", an offset, or a time."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    received: deque[tuple[int | None, bytes]] = deque()

    def on_message(ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
        position = (props.headers or {}).get("x-stream-offset")
        received.append((int(position) if isinstance(position, int) else None, body))
        ch.basic_ack(method.delivery_tag)  # streams keep messages; the ack only moves credit

    try:
        channel = connection.channel()
        try:
            channel.queue_declare(stream, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise TransportError(f"no record stream {stream!r}: {exc.reply_text}") from None
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch_count)
        channel.basic_consume(stream, on_message, auto_ack=False, arguments={"x-stream-offset": offset})
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_timeout_s:
            connection.process_data_events(time_limit=0.1)
            while received:
                idle_since = time.monotonic()
                yield received.popleft()
    except pika.exceptions.AMQPError as exc:
        raise TransportError(f"reading the record stream failed: {exc!r}") from exc
    finally:
        # A reader that stops early leaves deliveries in flight; pika rejects them on close,
        # which a stream refuses by closing the connection. Either way it is closed.
        if connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass


def publish_record(amqp_url: str | Sequence[str], stream: str, body: bytes) -> None:
    """Append raw bytes to a record stream: for tools and tests that bring old records."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", stream, body, BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()
