"""The scheduler's view of a host the rdb handed it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rdb_client.exceptions import MalformedBatchError
from rdb_client.requests import UpdateHostRequest

if TYPE_CHECKING:
    from rdb_client.client import RDBClient

HOST_FIELDS = (
    "id", "hostname", "status", "locked", "leased", "invalid", "protection",
    "dirty", "lock_reason", "labels", "acls", "platform",
)


class RDBClientHost:
    """A host as the rdb described it; writes go through the rdb.

    Reads are local (a snapshot of the reply); ``set_status`` and ``update_field`` send
    an update batch and change the local attribute only once the rdb confirmed it, so
    the object never claims a state the database does not have.
    """

    id: int
    hostname: str | None
    status: str | None
    locked: bool
    leased: bool
    invalid: bool
    protection: int
    dirty: bool
    lock_reason: str | None
    labels: list[str]
    acls: list[int]
    platform: str | None

    def __init__(self, info: dict[str, Any], client: RDBClient | None = None) -> None:
        missing = [f for f in HOST_FIELDS if f not in info]
        if missing:
            raise MalformedBatchError(f"host info is missing fields {missing}")
        for name in HOST_FIELDS:
            setattr(self, name, info[name])
        self._client = client
        self.dbg_str = ""

    def __repr__(self) -> str:
        return f"RDBClientHost(id={self.id}, hostname={self.hostname!r}, status={self.status!r}, leased={self.leased})"

    def _update(self, payload: dict[str, Any]) -> None:
        if self._client is None:
            raise RuntimeError("this host was built without a client; it cannot send updates")
        (error,) = self._client.update_hosts([UpdateHostRequest(self.id, payload)])
        if error is not None:
            raise error
        for name, value in payload.items():
            setattr(self, name, value)

    def set_status(self, status: str) -> None:
        self._update({"status": status})

    def update_field(self, fieldname: str, value: Any) -> None:
        self._update({fieldname: value})

    def platform_and_labels(self) -> tuple[str | None, list[str]]:
        """The platform label, and every other label."""
        return self.platform, [label for label in self.labels if label != self.platform]

    def _label_values(self, prefix: str) -> list[str]:
        return [label[len(prefix):] for label in self.labels if label.startswith(prefix)]

    @property
    def board(self) -> str | None:
        boards = self._label_values("board:")
        return boards[0] if boards else None

    @property
    def pools(self) -> list[str]:
        return self._label_values("pool:")
