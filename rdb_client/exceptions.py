"""The rdb's exception tree, shared by the client and the worker.

Errors cross the broker as data (``{"type": name, "message": text}``); the client turns
a known ``type`` back into its class here and wraps anything else in ``RemoteError``, so
a newer worker's new error kind still reaches the caller as an ``RDBException``.
"""

from __future__ import annotations

from typing import Any


class RDBException(Exception):
    """Base of every error the rdb raises or returns."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self)}


# --- a request that cannot be built -------------------------------------------------
class InvalidRequestError(RDBException, ValueError):
    """A request field is missing or has the wrong type or value; nothing was sent."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- errors of one update request (travel in that request's reply slot) ---------
class UpdateError(RDBException):
    """One update request was refused; the other updates of its batch still applied."""


class UnknownHostError(UpdateError):
    """The request names a host id that afe_hosts does not have."""


class UnknownColumnError(UpdateError):
    """The payload names a column afe_hosts does not have."""


class ColumnNotWritableError(UpdateError):
    """The payload names a column the rdb does not let clients write (id, leased, ...)."""


class WrongTypeError(UpdateError):
    """A payload value does not fit its column's type."""


# --- errors of a whole batch (travel as the reply's error) ------------------------
class BatchError(RDBException):
    """The worker refused or failed a whole batch; no request of it took effect."""


class MalformedBatchError(BatchError):
    """The message could not be decoded, or its envelope or a request in it is malformed."""


class UnsupportedVersionError(BatchError):
    """The envelope's protocol version is not one the worker speaks."""


class UnknownKindError(BatchError):
    """The envelope names a batch kind the worker does not know."""


class BatchTooLargeError(BatchError):
    """The batch holds more requests than the worker's limit."""


class BatchExpiredError(BatchError):
    """The batch arrived after its sender's deadline; the worker did not run it."""


class DatabaseUnavailableError(BatchError):
    """The worker could not reach MySQL, or gave up retrying a transaction."""


class WorkerError(BatchError):
    """An unexpected failure inside the worker while running the batch."""


# --- errors on the client's side of the broker ------------------------------------
class TransportError(RDBException):
    """The broker could not be reached or refused what the client asked."""


class NoWorkerQueueError(TransportError):
    """The broker could not route the batch: no worker has declared this queue name."""


class RDBTimeoutError(RDBException, TimeoutError):
    """No reply arrived within the call's timeout."""


class RemoteError(RDBException):
    """An error kind the worker sent that this client does not know."""

    def __init__(self, message: str, remote_type: str) -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type


_WIRE_TYPES: dict[str, type[RDBException]] = {
    cls.__name__: cls
    for cls in (
        RDBException,
        InvalidRequestError,
        UpdateError,
        UnknownHostError,
        UnknownColumnError,
        ColumnNotWritableError,
        WrongTypeError,
        BatchError,
        MalformedBatchError,
        UnsupportedVersionError,
        UnknownKindError,
        BatchTooLargeError,
        BatchExpiredError,
        DatabaseUnavailableError,
        WorkerError,
    )
}


def error_from_wire(data: Any) -> RDBException:
    """Rebuild an error sent as data; never raises, whatever the data."""
    if not isinstance(data, dict):
        return RemoteError(repr(data), "UnreadableError")
    name = str(data.get("type", "UnknownError"))
    message = str(data.get("message", ""))
    cls = _WIRE_TYPES.get(name)
    if cls is None:
        return RemoteError(message, name)
    if cls is InvalidRequestError:
        return InvalidRequestError(message)
    return cls(message)
