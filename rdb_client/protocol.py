"""The wire format: broker names, the batch envelope and the reply (docs/protocol.md).

Everything here is pure: bytes in, objects out, or one of the BatchError kinds naming
what was wrong. Neither end imports pika for this, so the format is testable alone and
another language can reimplement it from the doc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from rdb_client.exceptions import (
    BatchTooLargeError,
    InvalidRequestError,
    MalformedBatchError,
    RDBException,
    UnknownKindError,
    UnsupportedVersionError,
    error_from_wire,
)
from rdb_client.requests import REQUEST_CLASSES, RequestType

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
DEFAULT_QUEUE = "rdb.requests"
DEFAULT_MAX_REQUESTS = 10_000
CONTENT_TYPE = "application/msgpack"


@dataclass(frozen=True)
class BrokerNames:
    """Every broker object one rdb deployment uses, all derived from its queue name.

    Deriving them means two deployments that share a broker (and a vhost) but not a
    database can never see each other's batches: pick a different queue name.
    """

    queue: str

    @property
    def exchange(self) -> str:
        return f"{self.queue}.exchange"

    @property
    def routing_key(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead-letter"

    @property
    def record_stream(self) -> str:
        """The stream where workers record every batch they answered, with its reply."""
        return f"{self.queue}.record"


@dataclass(frozen=True)
class Batch:
    """A decoded batch: one kind of request, in the order the client sent them."""

    kind: str
    batch_id: str
    requests: list[Any]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Reply:
    """A decoded reply: results aligned with the batch's requests, or one batch error."""

    batch_id: str
    results: list[Any] | None
    error: RDBException | None
    meta: dict[str, Any]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_batch(kind: str, batch_id: str, requests: list[RequestType]) -> bytes:
    return _pack(
        {"v": PROTOCOL_VERSION, "kind": kind, "batch_id": batch_id, "requests": [r.to_wire() for r in requests]}
    )


def peek_batch_id(body: bytes) -> str | None:
    """The batch id of a message, if it can be read at all: for logging a bad batch."""
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception:  # noqa: BLE001 - any garbage simply has no id
        return None
    if isinstance(data, dict) and isinstance(data.get("batch_id"), str):
        return data["batch_id"]
    return None


def decode_batch(body: bytes, *, max_requests: int = DEFAULT_MAX_REQUESTS) -> Batch:
    """Decode and validate a whole batch, or raise the BatchError that says why not."""
    try:
        data = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MalformedBatchError(f"body is not a msgpack document: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedBatchError(f"envelope must be a map, got {type(data).__name__}")
    version = data.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"protocol version {version!r} is not supported; this worker speaks {sorted(SUPPORTED_VERSIONS)}"
        )
    missing = {"kind", "batch_id", "requests"} - set(data)
    if missing:
        raise MalformedBatchError(f"envelope is missing fields {sorted(missing)}")
    kind, batch_id, raw_requests = data["kind"], data["batch_id"], data["requests"]
    if not isinstance(batch_id, str) or not batch_id or len(batch_id) > 64:
        raise MalformedBatchError(f"envelope batch_id must be a string of 1-64 characters, got {batch_id!r}")
    cls = REQUEST_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownKindError(f"unknown batch kind {kind!r}; known kinds are {sorted(REQUEST_CLASSES)}")
    if not isinstance(raw_requests, list):
        raise MalformedBatchError(f"envelope requests must be a list, got {type(raw_requests).__name__}")
    if len(raw_requests) > max_requests:
        raise BatchTooLargeError(f"batch holds {len(raw_requests)} requests; the limit is {max_requests}")
    if kind == "release" and len(raw_requests) != 1:
        raise MalformedBatchError(f"a release batch holds exactly one request, got {len(raw_requests)}")
    if kind == "update":
        # Each update is judged alone: a bad one becomes an error in its own slot.
        requests: list[Any] = [_decode_update(raw) for raw in raw_requests]
    else:
        requests = []
        for index, raw in enumerate(raw_requests):
            try:
                requests.append(cls.from_wire(raw))
            except InvalidRequestError as exc:
                raise MalformedBatchError(f"request {index}: {exc}") from None
    return Batch(kind=kind, batch_id=batch_id, requests=requests, version=version)


def _decode_update(raw: Any) -> Any:
    try:
        return REQUEST_CLASSES["update"].from_wire(raw)
    except InvalidRequestError as exc:
        return exc


def encode_reply(
    batch_id: str,
    results: list[Any] | None = None,
    error: RDBException | None = None,
    meta: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "batch_id": batch_id, "meta": meta or {}}
    if error is not None:
        body["error"] = error.to_wire()
    else:
        body["results"] = results if results is not None else []
    return _pack(body)


def decode_reply(body: bytes) -> Reply:
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # noqa: BLE001
        raise MalformedBatchError(f"reply is not a msgpack document: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("batch_id"), str):
        raise MalformedBatchError("reply must be a map with a batch_id")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if "error" in data:
        return Reply(batch_id=data["batch_id"], results=None, error=error_from_wire(data["error"]), meta=meta)
    results = data.get("results")
    if not isinstance(results, list):
        raise MalformedBatchError("reply has neither results nor error")
    return Reply(batch_id=data["batch_id"], results=results, error=None, meta=meta)
