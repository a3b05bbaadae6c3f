"""What a worker writes to the record stream for each batch it answered.

A record carries the batch exactly as it arrived and the reply exactly as it left, so
``rdb-replay`` can show, re-run or re-publish it later without trusting anything but
the bytes. Pure functions; the transport publishes the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

RECORD_VERSION = 1
DEFAULT_RECORD_MAX_AGE = "7D"
DEFAULT_RECORD_MAX_BYTES = 1_000_000_000


@dataclass(frozen=True)
class Record:
    batch_id: str
    kind: str | None
    worker: str
    recorded_at_s: float
    correlation_id: str | None
    request: bytes
    reply: bytes
    offset: int | None = None


def stream_arguments(max_age: str = DEFAULT_RECORD_MAX_AGE, max_bytes: int = DEFAULT_RECORD_MAX_BYTES) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-max-age": max_age, "x-max-length-bytes": max_bytes}


def encode_record(batch_id: str, kind: str | None, worker: str, correlation_id: str | None,
                  request: bytes, reply: bytes) -> bytes:
    return msgpack.packb(
        {
            "rv": RECORD_VERSION, "batch_id": batch_id, "kind": kind, "worker": worker,
            "recorded_at": time.time(), "correlation_id": correlation_id, "request": request, "reply": reply,
        },
        use_bin_type=True,
    )


def decode_record(body: bytes, offset: int | None = None) -> Record:
    """Raises ValueError naming what is wrong: a replay skips such a record with the reason."""
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"record is not msgpack: {exc}") from None
    if not isinstance(data, dict) or data.get("rv") != RECORD_VERSION:
        raise ValueError(f"record format {data.get('rv') if isinstance(data, dict) else '?'} is not {RECORD_VERSION}")
    try:
        return Record(
            batch_id=str(data["batch_id"]), kind=data.get("kind"), worker=str(data.get("worker")),
            recorded_at_s=float(data["recorded_at"]), correlation_id=data.get("correlation_id"),
            request=bytes(data["request"]), reply=bytes(data["reply"]), offset=offset,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"record is missing or has a bad field: {exc}") from None
