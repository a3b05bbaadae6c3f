"""rdb-bench: one run, every variant, interleaved; a table, a JSON file and a PNG plot."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from tqdm import tqdm

from rdb_worker.bench import report
from rdb_worker.bench.lab import BenchLab, Process, make_lab, servers, start_celery_worker, start_worker, \
    wait_for_consumers
from rdb_worker.bench.variants import PER_REQUEST_VARIANTS, VARIANTS, Variant, make_variant
from rdb_worker.bench.workloads import DESCRIPTIONS, SUITE_KINDS, WORKLOADS, Tick, build

log = logging.getLogger("rdb_worker.bench")

TICK_WORKLOADS = ("suite-heavy", "all-distinct", "mixed")


@dataclass(frozen=True)
class Size:
    lab: int  # hosts for suite-heavy, all-distinct and mixed
    growth: tuple[int, ...]  # lab sizes for lab-growth
    requests: int  # acquire requests per tick
    kinds: int  # distinct kinds in suite-heavy
    repeats: int
    sample: int  # per-request/celery: requests timed per tick (then scaled)
    sample_largest: int  # the same, on the largest lab
    publishers: int
    scale_batch: int
    scale_duration_s: float
    scale_hosts: int

    def describe(self) -> str:
        return (f"labs of {self.lab:,} hosts (growth: {', '.join(f'{g:,}' for g in self.growth)}), "
                f"{self.requests:,} requests/tick, {self.repeats} repeats, per-request/celery sample "
                f"{self.sample} ({self.sample_largest} on the largest lab), scale-out {self.publishers} x "
                f"{self.scale_batch} for {self.scale_duration_s:g} s on {self.scale_hosts:,} hosts")


SIZES = {
    "tiny": Size(lab=200, growth=(100, 200, 400), requests=40, kinds=4, repeats=2, sample=8, sample_largest=8,
                 publishers=2, scale_batch=20, scale_duration_s=1.0, scale_hosts=400),
    "small": Size(lab=2_000, growth=(500, 2_000, 8_000), requests=400, kinds=SUITE_KINDS, repeats=3, sample=50,
                  sample_largest=20, publishers=4, scale_batch=100, scale_duration_s=4.0, scale_hosts=8_000),
    "full": Size(lab=10_000, growth=(1_000, 10_000, 100_000), requests=2_000, kinds=SUITE_KINDS, repeats=5,
                 sample=100, sample_largest=20, publishers=4, scale_batch=200, scale_duration_s=10.0,
                 scale_hosts=100_000),
}


def _parser() -> argparse.ArgumentParser:
    epilog = ["workloads:"]
    epilog += [f"  {name:<13} {DESCRIPTIONS[name]}" for name in WORKLOADS]
    epilog += ["", "variants:",
               "  rdb           the real client and a real rdb-worker process through RabbitMQ, one batch per tick",
               "  in-process    Dispatcher.handle on the encoded batch in the harness, no broker",
               "  per-request   one message and one transaction per request, same broker and worker",
               "  celery        a Celery task per request (rpc:// results) running the same Dispatcher",
               "  floor         one read of available hosts with labels and acls, one locking UPDATE",
               "", "sizes:"]
    epilog += [f"  {name:<6} {size.describe()}" for name, size in SIZES.items()]
    epilog += ["", "Without --amqp-url/--db-url, private RabbitMQ and MariaDB servers are started under",
               ".rdb-servers/ and removed afterwards. --db-url's user must be able to create databases."]
    p = argparse.ArgumentParser(
        prog="rdb-bench",
        description="Benchmark the batched rdb against the per-request pattern, Celery and the database floor.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="preset (default %(default)s)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of: " + ", ".join(WORKLOADS))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--repeats", type=int, help="timed runs per variant and workload (default: the size's)")
    p.add_argument("--sample", type=int, help="per-request/celery: requests timed per tick, scaled to the full tick")
    p.add_argument("--amqp-url", help="an existing broker (default: start a private one)")
    p.add_argument("--db-url", help="an existing MySQL/MariaDB server; its user creates the bench databases")
    p.add_argument("--servers-dir", type=Path, default=Path(".rdb-servers"),
                   help="where private servers live while the run lasts (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("bench/results"),
                   help="folder for results.json, plot.png and logs (default %(default)s)")
    p.add_argument("--json", type=Path, help="JSON path (default OUT/results.json)")
    p.add_argument("--plot", type=Path, help="PNG path (default OUT/plot.png)")
    p.add_argument("--profile", action="store_true",
                   help="also profile the in-process tick of each workload with pyinstrument (OUT/profile-*.txt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _versions(engine: Any, amqp_url: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("rdb", "SQLAlchemy", "PyMySQL", "pika", "msgpack", "celery", "kombu", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    with engine.connect() as conn:
        out["mariadb"] = str(conn.execute(text("SELECT VERSION()")).scalar())
    try:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        props = conn._impl.server_properties  # noqa: SLF001 - the only place pika exposes it
        out["rabbitmq"] = (props.get("version") or b"?").decode() if isinstance(props.get("version"), bytes) \
            else str(props.get("version"))
        conn.close()
    except Exception:  # noqa: BLE001 - informational
        out["rabbitmq"] = "?"
    return out


def _machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gb, "os": platform.platform()}


class Harness:
    def __init__(self, args: argparse.Namespace, size: Size, amqp_url: str, admin_url: str) -> None:
        self.args = args
        self.size = size
        self.amqp_url = amqp_url
        self.admin_url = admin_url
        self.admin_engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.run_id = uuid.uuid4().hex[:6]
        self.prefix = f"rdbbench_{self.run_id}"
        self.log_dir = args.out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.labs: dict[int, BenchLab] = {}
        self.workers: dict[int, Process] = {}
        self.queues: dict[int, str] = {}
        self.celery: Process | None = None
        self.celery_queue = f"rdb.bench.{self.run_id}.celery"
        self.progress = not args.no_progress
        self.variants = [v for v in VARIANTS if v in args.variants.split(",")]
        self.workloads = [w for w in WORKLOADS if w in args.workloads.split(",")]
        self.repeats = args.repeats or size.repeats

    # --- setup --------------------------------------------------------------------------
    def lab(self, hosts: int) -> BenchLab:
        if hosts not in self.labs:
            started = time.monotonic()
            self.labs[hosts] = make_lab(self.admin_engine, self.admin_url, hosts, prefix=self.prefix,
                                        progress=self.progress)
            log.info("seeded a lab of %d hosts in %.1f s", hosts, time.monotonic() - started)
            if "rdb" in self.variants or "per-request" in self.variants:
                queue = f"rdb.bench.{self.run_id}.{hosts}"
                self.queues[hosts] = queue
                proc = start_worker(self.amqp_url, self.labs[hosts].url, queue, self.log_dir)
                self.workers[hosts] = proc
                wait_for_consumers(self.amqp_url, queue, 1, proc.proc, proc.log_path)
        return self.labs[hosts]

    def ensure_celery(self) -> None:
        if self.celery is None and "celery" in self.variants:
            self.celery = start_celery_worker(self.amqp_url, self.admin_url, self.celery_queue, self.log_dir)
            wait_for_consumers(self.amqp_url, self.celery_queue, 1, self.celery.proc, self.celery.log_path)

    def close(self) -> None:
        for proc in [*self.workers.values(), *([self.celery] if self.celery else [])]:
            proc.stop()
        for lab in self.labs.values():
            try:
                lab.drop(self.admin_engine)
            except Exception as exc:  # noqa: BLE001 - best effort
                log.warning("could not drop %s: %s", lab.name, exc)
        self.admin_engine.dispose()

    # --- ticks ------------------------------------------------------------------------------
    def sample_for(self, hosts: int) -> int:
        if self.args.sample:
            return self.args.sample
        return self.size.sample_largest if hosts == max(self.size.growth + (self.size.lab,)) and hosts > self.size.lab \
            else self.size.sample

    def tick_workloads(self) -> list[tuple[str, int, str]]:
        """(result key, hosts, tick shape) of every tick workload selected."""
        out = [(w, self.size.lab, w) for w in TICK_WORKLOADS if w in self.workloads]
        if "lab-growth" in self.workloads:
            out += [(f"lab-growth/{n}", n, "suite-heavy") for n in self.size.growth]
        return out

    def run_ticks(self, results: dict[str, Any]) -> None:
        plan = self.tick_workloads()
        if not plan or not self.variants:
            return
        for _, hosts, _ in plan:
            self.lab(hosts)
        self.ensure_celery()
        reused = {}
        if "suite-heavy" in self.workloads:
            reused[f"lab-growth/{self.size.lab}"] = "suite-heavy"
        total = sum((self.repeats + 1) * len(self.variants) for key, _, _ in plan if key not in reused)
        bar = tqdm(total=total, desc="rdb-bench ticks", unit="run", disable=not self.progress)
        try:
            for key, hosts, shape in plan:
                lab = self.labs[hosts]
                tick = build(shape, lab.info, self.size.requests, self.size.kinds)
                entry = {"hosts": hosts, "requests": len(tick.acquire), "update_requests": len(tick.update),
                         "shape": shape, "variants": {}}
                if key in reused and reused[key] in results["workloads"]:
                    entry["variants"] = results["workloads"][reused[key]]["variants"]
                    entry["same_runs_as"] = reused[key]
                    results["workloads"][key] = entry
                    continue
                results["workloads"][key] = entry
                self._run_workload(key, lab, tick, entry, bar)
        finally:
            bar.close()
        for hosts, proc in self.workers.items():
            rss = proc.peak_rss_mb()
            if rss is not None:
                results["memory"]["worker_peak_rss_mb"][str(hosts)] = round(rss, 1)

    def _variant(self, name: str, lab: BenchLab) -> Variant:
        return make_variant(name, amqp_url=self.amqp_url, queue=self.queues.get(lab.hosts, ""), engine=lab.engine,
                            database=lab.name, celery_queue=self.celery_queue)

    def _run_workload(self, key: str, lab: BenchLab, tick: Tick, entry: dict[str, Any], bar: tqdm) -> None:
        variants = {name: self._variant(name, lab) for name in self.variants}
        sample = self.sample_for(lab.hosts)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        leased: dict[str, list[int]] = {name: [] for name in variants}
        sampled: dict[str, int | None] = {}
        try:
            bar.set_postfix_str(f"{key}: warm-up")
            for name, variant in variants.items():  # untimed: connections, caches, imports
                lab.reset()
                variant.run(tick, min(sample, 5) if name in PER_REQUEST_VARIANTS else None)
                bar.update(1)
            for rep in range(self.repeats):
                names = list(variants)
                names = names[rep % len(names):] + names[: rep % len(names)]  # rotate: no variant always first
                for name in names:
                    bar.set_postfix_str(f"{key}: {name} #{rep + 1}")
                    lab.reset()
                    run = variants[name].run(tick, sample if name in PER_REQUEST_VARIANTS else None)
                    samples[name].append(run.seconds)
                    leased[name].append(run.leased)
                    sampled[name] = run.sampled
                    bar.update(1)
        finally:
            for variant in variants.values():
                variant.close()
            lab.reset()
        for name in variants:
            stats = report.summarize(samples[name])
            stats["leased"] = round(sum(leased[name]) / len(leased[name]))
            stats["sampled_requests"] = sampled.get(name)
            entry["variants"][name] = stats
        if self.args.profile:
            self._profile(key, lab, tick)

    def _profile(self, key: str, lab: BenchLab, tick: Tick) -> None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            log.warning("--profile needs pyinstrument (pip install pyinstrument)")
            return
        variant = self._variant("in-process", lab)
        lab.reset()
        profiler = Profiler(interval=0.0005)
        profiler.start()
        variant.run(tick)
        profiler.stop()
        lab.reset()
        path = self.args.out / f"profile-{key.replace('/', '-')}.txt"
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))

    # --- scale-out ----------------------------------------------------------------------------
    def run_scale_out(self, results: dict[str, Any]) -> None:
        if "scale-out" not in self.workloads:
            return
        from rdb_worker.bench.scaleout import run_scale_out

        lab = self.lab(self.size.scale_hosts)
        for workers in (1, 2):
            if self.progress:
                print(f"rdb-bench scale-out: {workers} worker process(es), {self.size.publishers} publishers x "
                      f"{self.size.scale_batch} for {self.size.scale_duration_s:g} s ...", file=sys.stderr)
            queue = f"rdb.bench.{self.run_id}.scale{workers}"
            r = run_scale_out(lab, self.amqp_url, queue, self.log_dir, workers=workers,
                              publishers=self.size.publishers, batch=self.size.scale_batch,
                              duration_s=self.size.scale_duration_s)
            results["scale_out"][str(workers)] = r.as_dict()
        results["scale_out_hosts"] = lab.hosts
        lab.reset()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    unknown = [w for w in args.workloads.split(",") if w not in WORKLOADS]
    unknown += [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown or (args.repeats is not None and args.repeats < 1) or (args.sample is not None and args.sample < 1):
        parser.print_usage(sys.stderr)
        print(f"rdb-bench: error: unknown workload/variant {unknown} or a count < 1", file=sys.stderr)
        return 2
    if bool(args.amqp_url) != bool(args.db_url):
        print("rdb-bench: error: give both --amqp-url and --db-url, or neither", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # passive declares of queues not there yet
    size = SIZES[args.size]
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.json or args.out / "results.json"
    plot_path = args.plot or args.out / "plot.png"
    started = time.monotonic()
    results: dict[str, Any] = {
        "tool": "rdb-bench",
        "size": args.size,
        "size_params": size.__dict__ | {"growth": list(size.growth)},
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "units": "seconds per tick (median over repeats); spread = (max - min) / median",
        "variants": [],
        "workloads": {},
        "lab_growth_sizes": [],
        "scale_out": {},
        "memory": {"worker_peak_rss_mb": {}},
    }
    with servers(args.amqp_url, args.db_url, args.servers_dir) as (amqp_url, admin_url):
        harness = Harness(args, size, amqp_url, admin_url)
        results["variants"] = harness.variants
        if "lab-growth" in harness.workloads:
            results["lab_growth_sizes"] = list(size.growth)
        try:
            results["versions"] = _versions(harness.admin_engine, amqp_url)
            harness.run_ticks(results)
            harness.run_scale_out(results)
        finally:
            harness.close()
    results["goals"] = report.compute_goals(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    report.write_json(results, json_path)
    if results["lab_growth_sizes"]:
        from rdb_worker.bench.plot import plot

        plot(results, plot_path)
    print(report.table(results))
    print(f"\nwrote {json_path}" + (f" and {plot_path}" if results["lab_growth_sizes"] else "")
          + f" in {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
