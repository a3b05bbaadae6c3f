"""Request types and the wire format, in process."""

from __future__ import annotations

import msgpack
import pytest

from rdb_client import protocol
from rdb_client.exceptions import (
    BatchTooLargeError,
    InvalidRequestError,
    MalformedBatchError,
    RDBException,
    RemoteError,
    UnknownKindError,
    UnsupportedVersionError,
    error_from_wire,
)
from rdb_client.requests import AcquireHostRequest, HostRequest, ReleaseHostsRequest, UpdateHostRequest


def test_acquire_requests_with_same_ids_in_any_order_are_equal_and_hash_alike() -> None:
    a = AcquireHostRequest(deps=[2, 1], acls=(5,), preferred_deps=[9])
    b = AcquireHostRequest(deps={1, 2}, acls=[5], preferred_deps=(9,))
    assert a == b and hash(a) == hash(b)
    assert isinstance(a.deps, frozenset)


def test_requests_are_immutable() -> None:
    r = HostRequest(3)
    with pytest.raises(AttributeError):
        r.host_id = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"deps": "board:eve"}, "deps"),
        ({"acls": [1, "x"]}, "acls"),
        ({"priority": "high"}, "priority"),
        ({"host_id": 0}, "host_id"),
        ({"suite_min_duts": -1}, "suite_min_duts"),
        ({"parent_job_id": True}, "parent_job_id"),
    ],
)
def test_bad_acquire_field_raises_rdb_exception_naming_it(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        AcquireHostRequest(**kwargs)
    assert isinstance(info.value, RDBException)
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_host_id_raises_rdb_exception() -> None:
    with pytest.raises(RDBException):
        HostRequest()
    with pytest.raises(InvalidRequestError, match="payload"):
        UpdateHostRequest(3)
    with pytest.raises(InvalidRequestError, match="host_id"):
        HostRequest("7")  # type: ignore[arg-type]


def test_update_payload_is_hashable_and_validated() -> None:
    a = UpdateHostRequest(1, {"status": "Ready", "dirty": True})
    assert a == UpdateHostRequest(1, {"dirty": True, "status": "Ready"})
    assert hash(a) == hash(UpdateHostRequest(1, {"dirty": True, "status": "Ready"}))
    with pytest.raises(InvalidRequestError, match="payload"):
        UpdateHostRequest(1, {"status": ["x"]})
    with pytest.raises(InvalidRequestError, match="payload"):
        UpdateHostRequest(1, {})
    with pytest.raises(InvalidRequestError, match="payload"):
        UpdateHostRequest(1, "status=Ready")  # type: ignore[arg-type]


def test_release_grace_must_be_non_negative_number() -> None:
    assert ReleaseHostsRequest(grace_s=0).grace_s == 0
    with pytest.raises(InvalidRequestError, match="grace_s"):
        ReleaseHostsRequest(grace_s=-1)


def test_batch_round_trips_through_the_wire() -> None:
    requests = [AcquireHostRequest(deps={1}, acls={2}, priority=3), AcquireHostRequest(host_id=9, acls={2})]
    batch = protocol.decode_batch(protocol.encode_batch("acquire", "b1", requests))
    assert batch.kind == "acquire" and batch.batch_id == "b1" and batch.requests == requests


def _envelope(**overrides: object) -> bytes:
    env = {"v": 1, "kind": "get", "batch_id": "b", "requests": [{"host_id": 1}]}
    env.update(overrides)
    return msgpack.packb(env)


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b"\xc1not msgpack", MalformedBatchError, "msgpack"),
        (msgpack.packb([1, 2]), MalformedBatchError, "map"),
        (_envelope(v=99), UnsupportedVersionError, "99"),
        (_envelope(kind="steal"), UnknownKindError, "steal"),
        (_envelope(requests={"host_id": 1}), MalformedBatchError, "list"),
        (_envelope(requests=[{"host_id": "x"}]), MalformedBatchError, "request 0"),
        (_envelope(requests=[{"host": 1}]), MalformedBatchError, "unknown fields"),
    ],
)
def test_malformed_batches_raise_named_batch_errors(body: bytes, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        protocol.decode_batch(body)


def test_batch_over_the_limit_is_refused() -> None:
    body = protocol.encode_batch("get", "b", [HostRequest(i) for i in range(1, 12)])
    with pytest.raises(BatchTooLargeError, match="11"):
        protocol.decode_batch(body, max_requests=10)


def test_bad_update_is_an_error_in_its_own_slot_not_the_batch() -> None:
    body = _envelope(kind="update", requests=[{"host_id": 1, "payload": {"status": "Ready"}}, {"host_id": 1}])
    batch = protocol.decode_batch(body)
    assert isinstance(batch.requests[0], UpdateHostRequest)
    assert isinstance(batch.requests[1], InvalidRequestError)


def test_errors_travel_as_data_and_unknown_kinds_are_wrapped() -> None:
    err = error_from_wire(BatchTooLargeError("too big").to_wire())
    assert type(err) is BatchTooLargeError and str(err) == "too big"
    unknown = error_from_wire({"type": "FutureError", "message": "m"})
    assert isinstance(unknown, RemoteError) and isinstance(unknown, RDBException)
    assert "FutureError" in str(unknown)


def test_reply_round_trip_with_error() -> None:
    reply = protocol.decode_reply(protocol.encode_reply("b", error=UnsupportedVersionError("v9")))
    assert isinstance(reply.error, UnsupportedVersionError) and reply.results is None
