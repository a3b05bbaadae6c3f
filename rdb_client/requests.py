"""Request types: immutable, hashable, and validated when built.

Hashability is what lets the worker coalesce identical acquisitions with a
``collections.Counter``; validation at construction means a bad request fails in the
caller's stack, naming its field, before anything is published. The worker rebuilds
requests from the wire with the same constructors, so both ends agree on what is valid.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rdb_client.exceptions import InvalidRequestError

Scalar = str | int | float | bool | None


class _Missing:
    """Default of a required field: lets a missing field raise our error, not TypeError."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def _int_field(cls: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    if value is MISSING:
        raise InvalidRequestError(f"{cls}.{name} is required", field=name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(
            f"{cls}.{name} must be an int, got {type(value).__name__} {value!r}", field=name
        )
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{cls}.{name} must be >= {minimum}, got {value}", field=name)
    return value


def _id_set(cls: str, name: str, value: Any) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidRequestError(
            f"{cls}.{name} must be an iterable of int ids, got {type(value).__name__} {value!r}",
            field=name,
        )
    items = list(value)
    for item in items:
        _int_field(cls, name, item, minimum=1)
    return frozenset(items)


class FrozenPayload(Mapping[str, Scalar]):
    """A read-only, hashable column -> value mapping (an update's payload)."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Scalar]) -> None:
        self._items = dict(items)
        self._hash = hash(frozenset(self._items.items()))

    def __getitem__(self, key: str) -> Scalar:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenPayload({self._items!r})"


@dataclass(frozen=True, slots=True)
class HostRequest:
    """Read one host, leased or not."""

    kind: ClassVar[str] = "get"
    host_id: int = MISSING

    def __post_init__(self) -> None:
        _int_field(type(self).__name__, "host_id", self.host_id, minimum=1)

    def to_wire(self) -> dict[str, Any]:
        return {"host_id": self.host_id}

    @classmethod
    def from_wire(cls, data: Any) -> HostRequest:
        return cls(**_wire_kwargs(cls, data, {"host_id"}))


def _payload_value(column: Any, value: Any) -> Scalar:
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InvalidRequestError(
        f"UpdateHostRequest.payload[{column!r}] must be a str, int, float, bool, datetime or "
        f"None, got {type(value).__name__} {value!r}",
        field="payload",
    )


@dataclass(frozen=True, slots=True, init=False)
class UpdateHostRequest:
    """Set columns of one afe_hosts row; the worker checks columns against its allow-list."""

    kind: ClassVar[str] = "update"
    host_id: int
    payload: FrozenPayload

    def __init__(self, host_id: int = MISSING, payload: Mapping[str, Any] = MISSING) -> None:
        _int_field("UpdateHostRequest", "host_id", host_id, minimum=1)
        if payload is MISSING:
            raise InvalidRequestError("UpdateHostRequest.payload is required", field="payload")
        if not isinstance(payload, Mapping):
            raise InvalidRequestError(
                f"UpdateHostRequest.payload must be a mapping of column -> value, got "
                f"{type(payload).__name__} {payload!r}",
                field="payload",
            )
        if not payload:
            raise InvalidRequestError("UpdateHostRequest.payload must name at least one column", "payload")
        clean: dict[str, Scalar] = {}
        for column, value in payload.items():
            if not isinstance(column, str) or not column:
                raise InvalidRequestError(
                    f"UpdateHostRequest.payload keys must be column names, got {column!r}", "payload"
                )
            clean[column] = _payload_value(column, value)
        object.__setattr__(self, "host_id", host_id)
        object.__setattr__(self, "payload", FrozenPayload(clean))

    def to_wire(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "payload": dict(self.payload)}

    @classmethod
    def from_wire(cls, data: Any) -> UpdateHostRequest:
        return cls(**_wire_kwargs(cls, data, {"host_id", "payload"}))


@dataclass(frozen=True, slots=True)
class AcquireHostRequest:
    """Lease one host carrying every dep and sharing an acl; or, with host_id, that host.

    deps, acls and preferred_deps are ids (afe_labels.id, afe_acl_groups.id), held as
    frozensets so that two requests for the same kind of host compare equal whatever
    order their ids came in. A request with no acls matches no host, as in autotest.
    """

    kind: ClassVar[str] = "acquire"
    host_id: int | None = None
    deps: frozenset[int] = field(default=frozenset())
    acls: frozenset[int] = field(default=frozenset())
    priority: int = 0
    preferred_deps: frozenset[int] = field(default=frozenset())
    parent_job_id: int = 0
    suite_min_duts: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.host_id is not None:
            _int_field(name, "host_id", self.host_id, minimum=1)
        object.__setattr__(self, "deps", _id_set(name, "deps", self.deps))
        object.__setattr__(self, "acls", _id_set(name, "acls", self.acls))
        object.__setattr__(self, "preferred_deps", _id_set(name, "preferred_deps", self.preferred_deps))
        _int_field(name, "priority", self.priority)
        _int_field(name, "parent_job_id", self.parent_job_id, minimum=0)
        _int_field(name, "suite_min_duts", self.suite_min_duts, minimum=0)

    @property
    def is_validation(self) -> bool:
        return self.host_id is not None

    def to_wire(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "deps": sorted(self.deps),
            "acls": sorted(self.acls),
            "priority": self.priority,
            "preferred_deps": sorted(self.preferred_deps),
            "parent_job_id": self.parent_job_id,
            "suite_min_duts": self.suite_min_duts,
        }

    @classmethod
    def from_wire(cls, data: Any) -> AcquireHostRequest:
        return cls(
            **_wire_kwargs(
                cls,
                data,
                {"host_id", "deps", "acls", "priority", "preferred_deps", "parent_job_id", "suite_min_duts"},
                required=set(),
            )
        )


@dataclass(frozen=True, slots=True)
class ReleaseHostsRequest:
    """Free every leased host that is idle (Ready, unlocked, nothing running or due on it).

    grace_s: leases younger than this are kept, so a host another scheduler has just
    leased, and not yet marked active, is not pulled from under it. None means the
    worker's configured grace period.
    """

    kind: ClassVar[str] = "release"
    grace_s: float | None = None

    def __post_init__(self) -> None:
        if self.grace_s is not None:
            if isinstance(self.grace_s, bool) or not isinstance(self.grace_s, (int, float)):
                raise InvalidRequestError(
                    f"ReleaseHostsRequest.grace_s must be a number of seconds or None, got {self.grace_s!r}",
                    field="grace_s",
                )
            if not math.isfinite(self.grace_s) or self.grace_s < 0:
                raise InvalidRequestError(
                    f"ReleaseHostsRequest.grace_s must be a finite number >= 0, got {self.grace_s!r}", field="grace_s"
                )

    def to_wire(self) -> dict[str, Any]:
        return {"grace_s": self.grace_s}

    @classmethod
    def from_wire(cls, data: Any) -> ReleaseHostsRequest:
        return cls(**_wire_kwargs(cls, data, {"grace_s"}, required=set()))


def _wire_kwargs(
    cls: type, data: Any, allowed: set[str], required: set[str] | None = None
) -> dict[str, Any]:
    """Check a decoded request map's keys, so a typo is an error and not a silent default."""
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{cls.__name__} must be a map, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise InvalidRequestError(f"{cls.__name__} has unknown fields {sorted(map(str, unknown))}")
    missing = (allowed if required is None else required) - set(data)
    if missing:
        raise InvalidRequestError(f"{cls.__name__} is missing fields {sorted(missing)}", field=min(missing))
    return {str(k): v for k, v in data.items()}


RequestType = HostRequest | UpdateHostRequest | AcquireHostRequest | ReleaseHostsRequest

REQUEST_CLASSES: dict[str, type[HostRequest] | type[UpdateHostRequest] | type[AcquireHostRequest] | type[ReleaseHostsRequest]] = {
    "get": HostRequest,
    "update": UpdateHostRequest,
    "acquire": AcquireHostRequest,
    "release": ReleaseHostsRequest,
}
