"""Scale-out: publishers sending batches for a fixed time to 1, then 2 worker processes.

Each publisher is a process of its own (a scheduler), with its own RDBClient, sending
acquire batches back to back until the deadline. Throughput is requests answered per
second of wall time. Then the database is checked: every stored acquire reply
(rdb_batches) is decoded, and no host may appear in two of them, and each such host
must be leased by exactly the batch whose reply names it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from sqlalchemy import text

from rdb_worker.bench.lab import BenchLab, Process, start_worker, wait_for_consumers
from rdb_worker.bench.workloads import suite_heavy


@dataclass
class ScaleOutResult:
    workers: int
    publishers: int
    batch: int
    duration_s: float
    requests: int
    leased: int
    batches: int
    throughput_rps: float
    double_leases: int
    mismatched_leases: int
    lost_races: int
    worker_peak_rss_mb: list[float] = field(default_factory=list)
    # CPU seconds used during the timed window, and the machine's capacity in that window
    # (cores x seconds): where the cores went, when throughput stops scaling.
    cpu_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _publisher(amqp_url: str, queue: str, requests: list[dict[str, Any]], go: Any, duration_s: float,
               out: Any) -> None:
    from rdb_client import RDBClient
    from rdb_client.requests import AcquireHostRequest

    try:
        batch = [AcquireHostRequest.from_wire(r) for r in requests]
        answered = leased = batches = 0
        with RDBClient(amqp_url, timeout_s=120, queue=queue) as client:
            out.put("ready")
            go.wait(120)
            cpu0 = time.process_time()
            stop_at = time.time() + duration_s
            while time.time() < stop_at:
                hosts = client.acquire_hosts(batch)
                answered += len(hosts)
                leased += sum(h is not None for h in hosts)
                batches += 1
            finished = time.time()
            cpu = time.process_time() - cpu0
        out.put((answered, leased, batches, finished, cpu))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put(f"publisher failed: {type(exc).__name__}: {exc}")


def check_leases(lab: BenchLab) -> tuple[int, int, int]:
    """(hosts named by two stored replies, hosts whose leased_by disagrees, lost races)."""
    owner: dict[int, str] = {}
    seen: Counter[int] = Counter()
    lost = 0
    with lab.engine.connect() as conn:
        for batch_id, reply in conn.execute(text("SELECT batch_id, reply FROM rdb_batches WHERE kind = 'acquire'")):
            data = msgpack.unpackb(reply, raw=False)
            lost += int(data.get("meta", {}).get("lost_races", 0))
            for info in data.get("results") or []:
                if info is not None:
                    seen[info["id"]] += 1
                    owner[info["id"]] = batch_id
        leased = dict(conn.execute(text("SELECT id, leased_by FROM afe_hosts WHERE leased = 1")).all())
    double = sum(1 for n in seen.values() if n > 1)
    mismatched = sum(1 for h, b in owner.items() if leased.get(h) != b) + len(set(leased) - set(owner))
    return double, mismatched, lost


def run_scale_out(lab: BenchLab, amqp_url: str, queue: str, log_dir: Any, *, workers: int, publishers: int,
                  batch: int, duration_s: float) -> ScaleOutResult:
    lab.reset()
    procs: list[Process] = []
    try:
        for n in range(workers):
            procs.append(start_worker(amqp_url, lab.url, queue, log_dir))
            wait_for_consumers(amqp_url, queue, n + 1, procs[-1].proc, procs[-1].log_path)
        wire = [r.to_wire() for r in suite_heavy(lab.info, batch).acquire]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        go = ctx.Event()
        children = [ctx.Process(target=_publisher, args=(amqp_url, queue, wire, go, duration_s, out), daemon=True)
                    for _ in range(publishers)]
        for c in children:
            c.start()
        for _ in children:  # every publisher connected: start the clock
            message = out.get(timeout=120)
            if message != "ready":
                raise RuntimeError(str(message))
        machine0, workers0 = _machine_cpu_s(), [_proc_cpu_s(p.pid) for p in procs]
        servers0 = _named_cpu_s()
        start_at = time.time()
        go.set()
        results = [out.get(timeout=duration_s + 300) for _ in children]
        machine1, workers1 = _machine_cpu_s(), [_proc_cpu_s(p.pid) for p in procs]
        servers1 = _named_cpu_s()
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            raise RuntimeError(failed[0])
        for c in children:
            c.join(30)
        rss = [p.peak_rss_mb() or 0.0 for p in procs]
    finally:
        for p in procs:
            p.stop()
    answered = sum(r[0] for r in results)
    elapsed = max(r[3] for r in results) - start_at
    double, mismatched, lost = check_leases(lab)
    workers_cpu = sum(b - a for a, b in zip(workers0, workers1))
    publishers_cpu = sum(r[4] for r in results)
    busy = machine1[0] - machine0[0]
    cpu = {
        "capacity": round((machine1[1] - machine0[1]), 2),
        "busy": round(busy, 2),
        "workers": round(workers_cpu, 2),
        "publishers": round(publishers_cpu, 2),
        "broker_db_and_rest": round(busy - workers_cpu - publishers_cpu, 2),
        "broker": round(servers1["broker"] - servers0["broker"], 2),
        "database": round(servers1["database"] - servers0["database"], 2),
    }
    return ScaleOutResult(
        workers=workers, publishers=publishers, batch=batch, duration_s=elapsed, requests=answered,
        leased=sum(r[1] for r in results), batches=sum(r[2] for r in results),
        throughput_rps=answered / elapsed if elapsed > 0 else 0.0, double_leases=double,
        mismatched_leases=mismatched, lost_races=lost, worker_peak_rss_mb=rss, cpu_s=cpu,
    )


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


SERVER_COMMS = {"beam.smp": "broker", "mariadbd": "database", "mysqld": "database"}


def _named_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by the broker (Erlang VM) and database processes."""
    totals = {"broker": 0.0, "database": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1:text.rfind(")")]
        role = SERVER_COMMS.get(comm)
        if role:
            totals[role] += _proc_cpu_s(int(stat.parent.name))
    return totals


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick
