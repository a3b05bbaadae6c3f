"""The client's side of RabbitMQ: publish a batch, wait for its reply.

The only module of rdb_client that imports pika. A client owns one connection, used
only from the thread that made the call (pika's BlockingConnection is not thread-safe).
Batches are published with publisher confirms and ``mandatory``: a queue name no worker
has declared fails at once instead of timing out. Replies come back on an exclusive
queue of this connection, matched by correlation id; anything else there is stale (a
reply to a call that already timed out) and is dropped.
"""

from __future__ import annotations

import logging
import ssl
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from collections.abc import Sequence

import pika
import pika.exceptions
from pika.spec import BasicProperties

from rdb_client.exceptions import NoWorkerQueueError, RDBTimeoutError, TransportError
from rdb_client.protocol import CONTENT_TYPE, BrokerNames

log = logging.getLogger(__name__)

SENT_AT_HEADER = "x-rdb-sent-at-ms"
HEARTBEAT_S = 30
CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF_S = 0.5


class _ConnectionLost(Exception):
    """Internal: the connection dropped mid-call; the call may be retried."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(repr(cause))
        self.cause = cause


TLS_QUERY_KEYS = ("cafile", "certfile", "keyfile", "server_hostname")


def connection_parameters(urls: str | Sequence[str]) -> list[pika.URLParameters]:
    """pika parameters for one URL or several (a cluster: tried in order on connect).

    An ``amqps://`` URL may name its CA, client certificate and key as query parameters
    (``?cafile=/etc/rdb/ca.pem&certfile=...&keyfile=...``), which pika's own URL syntax
    can't express; without them the system's default trust store is used.
    """
    if isinstance(urls, str):
        urls = [u for u in urls.split(",") if u.strip()]
    params = []
    for raw in urls:
        url = raw.strip()
        tls = {}
        parsed = urlsplit(url)
        if parsed.scheme == "amqps":
            query = parse_qsl(parsed.query, keep_blank_values=True)
            if any(k == "ssl_options" for k, _ in query):
                raise TransportError(
                    "amqps URL: use cafile=, certfile=, keyfile= (and server_hostname=) instead of ssl_options="
                )
            tls = {k: v for k, v in query if k in TLS_QUERY_KEYS}
            url = urlunsplit(parsed._replace(query=urlencode([(k, v) for k, v in query if k not in TLS_QUERY_KEYS])))
        p = pika.URLParameters(url)
        if parsed.scheme == "amqps":
            context = ssl.create_default_context(cafile=tls.get("cafile"))
            if tls.get("certfile"):
                context.load_cert_chain(tls["certfile"], tls.get("keyfile"))
            p.ssl_options = pika.SSLOptions(context, tls.get("server_hostname") or parsed.hostname)
        if "heartbeat=" not in url:
            p.heartbeat = HEARTBEAT_S
        p.connection_attempts = 1
        p.socket_timeout = 5
        p.blocked_connection_timeout = 30
        params.append(p)
    if not params:
        raise TransportError("no broker URL given")
    return params


def mask_url(url: str | Sequence[str]) -> str:
    """URLs fit for a log line: passwords replaced by ***."""
    if not isinstance(url, str):
        return ",".join(mask_url(u) for u in url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


class ClientTransport:
    def __init__(self, amqp_url: str | Sequence[str], names: BrokerNames) -> None:
        self.params = connection_parameters(amqp_url)
        self.names = names
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._reply_queue: str | None = None
        self._replies: dict[str, bytes] = {}
        self._waiting: str | None = None

    def _connect(self) -> None:
        last: Exception | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                self._connection = pika.BlockingConnection(self.params)
                channel = self._connection.channel()
                channel.exchange_declare(self.names.exchange, exchange_type="direct", durable=True)
                channel.confirm_delivery()
                declared = channel.queue_declare("", exclusive=True, auto_delete=True)
                self._reply_queue = declared.method.queue
                channel.basic_consume(self._reply_queue, self._on_reply, auto_ack=True)
                self._channel = channel
                return
            except (pika.exceptions.AMQPError, OSError) as exc:  # OSError: a failed TLS handshake
                last = exc
                self.close()
                time.sleep(CONNECT_BACKOFF_S * (attempt + 1))
        raise TransportError(f"cannot connect to the broker: {last!r}")

    def _on_reply(self, _ch: object, _method: object, props: BasicProperties, body: bytes) -> None:
        if props.correlation_id is not None and props.correlation_id == self._waiting:
            self._replies[props.correlation_id] = body
        else:
            log.warning("dropping a reply for correlation id %s: no call is waiting for it", props.correlation_id)

    def call(self, body: bytes, correlation_id: str, timeout_s: float) -> bytes:
        """Publish one batch and wait for its reply, for at most ``timeout_s``.

        If the broker connection drops, the same batch (same id) is published again on a
        new connection until the deadline: the worker stores each batch's reply with its
        effects, so a batch that already ran is answered from there, not run twice.
        """
        deadline = time.monotonic() + timeout_s
        backoff_s = CONNECT_BACKOFF_S
        last_error: Exception | None = None
        while True:
            try:
                return self._call_once(body, correlation_id, deadline, timeout_s)
            except _ConnectionLost as lost:
                last_error = lost.cause
                self.close()
                if time.monotonic() + backoff_s >= deadline:
                    raise TransportError(
                        f"lost the broker during batch {correlation_id} and could not get it answered "
                        f"within {timeout_s:.1f} s: {last_error!r}"
                    ) from last_error
                log.warning("batch %s: broker connection lost (%r); retrying in %.1f s",
                            correlation_id, last_error, backoff_s)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)

    def _call_once(self, body: bytes, correlation_id: str, deadline: float, timeout_s: float) -> bytes:
        try:
            if self._channel is None or self._connection is None or not self._connection.is_open:
                self._connect()
        except TransportError as exc:
            raise _ConnectionLost(exc) from exc
        assert self._channel is not None and self._connection is not None
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        self._waiting = correlation_id
        try:
            self._channel.basic_publish(
                exchange=self.names.exchange,
                routing_key=self.names.routing_key,
                body=body,
                properties=BasicProperties(
                    content_type=CONTENT_TYPE,
                    correlation_id=correlation_id,
                    message_id=correlation_id,
                    reply_to=self._reply_queue,
                    expiration=str(remaining_ms),
                    delivery_mode=2,
                    timestamp=int(time.time()),
                    headers={SENT_AT_HEADER: int(time.time() * 1000)},
                ),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            self._waiting = None
            raise NoWorkerQueueError(
                f"no queue is bound for {self.names.queue!r} on exchange {self.names.exchange!r}: "
                f"no worker has been started with --queue {self.names.queue}"
            ) from None
        except pika.exceptions.NackError:
            self._waiting = None
            raise TransportError(f"the broker refused batch {correlation_id} (nack)") from None
        except pika.exceptions.AMQPError as exc:
            self._waiting = None
            raise _ConnectionLost(exc) from exc
        try:
            while correlation_id not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RDBTimeoutError(
                        f"no reply to batch {correlation_id} within {timeout_s:.1f} s; "
                        f"{self._consumer_report()}"
                    )
                self._connection.process_data_events(time_limit=min(remaining, 0.25))
            return self._replies.pop(correlation_id)
        except pika.exceptions.AMQPError as exc:
            raise _ConnectionLost(exc) from exc
        finally:
            self._waiting = None
            self._replies.clear()

    def _consumer_report(self) -> str:
        """Say whether anyone was there to answer: the first question after a timeout."""
        assert self._connection is not None
        try:
            channel = self._connection.channel()
            try:
                ok = channel.queue_declare(self.names.queue, passive=True)
                consumers, messages = ok.method.consumer_count, ok.method.message_count
            finally:
                if channel.is_open:
                    channel.close()
        except pika.exceptions.AMQPError as exc:
            return f"could not inspect queue {self.names.queue!r}: {exc!r}"
        if consumers == 0:
            return f"queue {self.names.queue!r} has NO consumer (no worker running); {messages} message(s) waiting"
        return f"queue {self.names.queue!r} has {consumers} consumer(s) and {messages} message(s) waiting"

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already broken: nothing left to close
                pass
