"""rdb client: what a scheduler imports to lease, read, update and release hosts."""

from rdb_client.client import RDBClient
from rdb_client.exceptions import (
    BatchError,
    InvalidRequestError,
    NoWorkerQueueError,
    RDBException,
    RDBTimeoutError,
    TransportError,
    UpdateError,
)
from rdb_client.host import RDBClientHost
from rdb_client.requests import AcquireHostRequest, HostRequest, ReleaseHostsRequest, UpdateHostRequest


def __getattr__(name: str) -> object:
    # JobQueryManager pulls in SQLAlchemy and the schema; load it only when asked for.
    if name == "JobQueryManager":
        from rdb_client.jobs import JobQueryManager

        return JobQueryManager
    raise AttributeError(name)


__all__ = [
    "AcquireHostRequest",
    "BatchError",
    "HostRequest",
    "InvalidRequestError",
    "JobQueryManager",
    "NoWorkerQueueError",
    "RDBClient",
    "RDBClientHost",
    "RDBException",
    "RDBTimeoutError",
    "ReleaseHostsRequest",
    "TransportError",
    "UpdateError",
    "UpdateHostRequest",
]
