"""Named crash points for fault tests: ``RDB_FAILPOINT=after_commit`` makes the worker
SIGKILL itself the first time it reaches that point.

They exist so tests can kill a real worker process at an exact moment (before commit,
after commit, after the reply but before the ack) instead of hoping a timed kill lands
there. Unset, a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "RDB_FAILPOINT"
POINTS = frozenset({"before_commit", "after_commit", "after_reply", "slow_batch"})
SLOW_BATCH_S = float(os.environ.get("RDB_FAILPOINT_SLOW_S", "6"))


def hit(point: str) -> None:
    active = os.environ.get(ENV)
    if active != point:
        return
    if point == "slow_batch":
        time.sleep(SLOW_BATCH_S)  # a long batch: the heartbeat must survive it
        return
    os.kill(os.getpid(), signal.SIGKILL)
