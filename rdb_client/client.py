"""RDBClient: the scheduler's handle on the rdb.

Each call is one batch: one message out, one reply back, matched by correlation id,
its results aligned with the requests (the worker does the matching, so the client's
request manager only checks the alignment and builds objects).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from rdb_client import protocol
from rdb_client.exceptions import InvalidRequestError, MalformedBatchError, RDBException, error_from_wire
from rdb_client.host import RDBClientHost
from rdb_client.requests import AcquireHostRequest, HostRequest, ReleaseHostsRequest, UpdateHostRequest
from rdb_client.transport import ClientTransport

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


class RDBClient:
    def __init__(
        self,
        amqp_url: str | Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        queue: str = protocol.DEFAULT_QUEUE,
    ) -> None:
        if timeout_s <= 0:
            raise InvalidRequestError(f"timeout_s must be > 0, got {timeout_s}", field="timeout_s")
        self.timeout_s = timeout_s
        self.names = protocol.BrokerNames(queue)
        self._transport = ClientTransport(amqp_url, self.names)

    def __enter__(self) -> RDBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    # --- the request manager ----------------------------------------------------------
    def _call(self, kind: str, requests: Sequence[Any]) -> list[Any]:
        batch_id = uuid.uuid4().hex
        body = protocol.encode_batch(kind, batch_id, list(requests))
        log.debug("batch %s: sending %d %s request(s)", batch_id, len(requests), kind)
        reply = protocol.decode_reply(self._transport.call(body, batch_id, self.timeout_s))
        if reply.batch_id != batch_id:
            raise MalformedBatchError(f"reply for batch {reply.batch_id} arrived for batch {batch_id}")
        if reply.error is not None:
            log.info("batch %s: %s failed: %s", batch_id, kind, reply.error)
            raise reply.error
        assert reply.results is not None
        if len(reply.results) != len(requests):
            raise MalformedBatchError(
                f"batch {batch_id}: {len(requests)} request(s) but {len(reply.results)} result(s)"
            )
        log.info("batch %s: %s of %d request(s) answered %s", batch_id, kind, len(requests), reply.meta)
        return reply.results

    @staticmethod
    def _check(requests: Iterable[Any], cls: type) -> list[Any]:
        items = list(requests)
        for index, request in enumerate(items):
            if not isinstance(request, cls):
                raise InvalidRequestError(
                    f"request {index} must be a {cls.__name__}, got {type(request).__name__}"
                )
        return items

    def _host(self, info: Any) -> RDBClientHost | None:
        return RDBClientHost(info, self) if info is not None else None

    # --- the API --------------------------------------------------------------------------
    def acquire_hosts(self, requests: Iterable[AcquireHostRequest]) -> list[RDBClientHost | None]:
        """Lease a host per request (None where none is free); identical requests get different hosts."""
        items = self._check(requests, AcquireHostRequest)
        if not items:
            return []
        return [self._host(info) for info in self._call("acquire", items)]

    def get_hosts(self, host_ids: Iterable[int]) -> list[RDBClientHost | None]:
        """Read hosts, leased or not; None for an id afe_hosts doesn't have."""
        items = [HostRequest(host_id) for host_id in host_ids]
        if not items:
            return []
        return [self._host(info) for info in self._call("get", items)]

    def update_hosts(self, requests: Iterable[UpdateHostRequest]) -> list[RDBException | None]:
        """Apply updates; each entry is None or the error of that request alone."""
        items = self._check(requests, UpdateHostRequest)
        if not items:
            return []
        return [None if r is None else error_from_wire(r) for r in self._call("update", items)]

    def release_hosts(self, grace_s: float | None = None) -> list[int]:
        """Free idle leased hosts; returns their ids ascending.

        grace_s: keep leases younger than this; None uses the worker's grace period.
        """
        (released,) = self._call("release", [ReleaseHostsRequest(grace_s=grace_s)])
        return list(released)
