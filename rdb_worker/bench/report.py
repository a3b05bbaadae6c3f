"""Statistics, the goals of issue 4, the table for people and the JSON for tools."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (name, workload, numerator variant, denominator variant, limit, what "ok" means)
#   kind "max": numerator/denominator must be <= limit; "min": must be >= limit.
GOALS: list[dict[str, Any]] = [
    {"goal": "suite-heavy: per-request / rdb", "workload": "suite-heavy", "num": "per-request", "den": "rdb",
     "kind": "min", "limit": 50.0},
    {"goal": "suite-heavy: celery / rdb", "workload": "suite-heavy", "num": "celery", "den": "rdb",
     "kind": "min", "limit": 50.0},
    {"goal": "suite-heavy: rdb / in-process", "workload": "suite-heavy", "num": "rdb", "den": "in-process",
     "kind": "max", "limit": 1.2},
    {"goal": "suite-heavy: rdb / floor", "workload": "suite-heavy", "num": "rdb", "den": "floor",
     "kind": "max", "limit": 1.5},
    {"goal": "all-distinct: rdb / floor", "workload": "all-distinct", "num": "rdb", "den": "floor",
     "kind": "max", "limit": 2.0},
]


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "iqr_s": q[2] - q[0],
        "spread_pct": 100.0 * (ordered[-1] - ordered[0]) / statistics.median(ordered) if ordered[0] > 0 else 0.0,
        "repeats": len(ordered),
        "samples_s": ordered,
    }


def _median(results: dict[str, Any], workload: str, variant: str) -> float | None:
    try:
        return float(results["workloads"][workload]["variants"][variant]["median_s"])
    except KeyError:
        return None


def compute_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for g in GOALS:
        num, den = _median(results, g["workload"], g["num"]), _median(results, g["workload"], g["den"])
        ratio = num / den if num is not None and den else None
        out.append(_goal_row(g["goal"], ratio, g["kind"], g["limit"]))
    growth = results.get("lab_growth_sizes") or []
    if len(growth) >= 2:
        lo, hi = min(growth), max(growth)
        a = _median(results, f"lab-growth/{hi}", "rdb")
        b = _median(results, f"lab-growth/{lo}", "rdb")
        out.append(_goal_row(f"lab growth: rdb at {hi} / at {lo} hosts", a / b if a and b else None, "max", 4.0))
    so = results.get("scale_out") or {}
    one, two = so.get("1"), so.get("2")
    if one and two:
        ratio = two["throughput_rps"] / one["throughput_rps"] if one["throughput_rps"] else None
        out.append(_goal_row("scale-out: 2 workers / 1 worker (requests/s)", ratio, "min", 1.5))
        doubles = one["double_leases"] + two["double_leases"] + one["mismatched_leases"] + two["mismatched_leases"]
        out.append({"goal": "scale-out: hosts leased twice", "ratio": float(doubles), "kind": "max", "limit": 0.0,
                    "met": doubles == 0})
    rss = (results.get("memory") or {}).get("worker_peak_rss_mb") or {}
    if rss:
        size = max(rss, key=int)
        out.append(_goal_row(f"memory: worker peak RSS at {size} hosts (MiB)", rss[size], "max", 200.0))
    return out


def _goal_row(name: str, ratio: float | None, kind: str, limit: float) -> dict[str, Any]:
    met = None if ratio is None else (ratio <= limit if kind == "max" else ratio >= limit)
    return {"goal": name, "ratio": ratio, "kind": kind, "limit": limit, "met": met}


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def table(results: dict[str, Any]) -> str:
    variants: list[str] = results["variants"]
    lines = []
    head = f"{'workload':<22} {'hosts':>7} {'reqs':>5}  " + "  ".join(f"{v:>18}" for v in variants)
    lines += ["time per tick: median (spread min-max %, repeats; * = scaled from a sample)", head, "-" * len(head)]
    for name, w in results["workloads"].items():
        cells = []
        for v in variants:
            r = w["variants"].get(v)
            if r is None:
                cells.append(f"{'-':>18}")
                continue
            mark = "*" if r.get("sampled_requests") else " "
            cells.append(f"{_fmt_s(r['median_s']) + mark:>10} ±{r['spread_pct']:>3.0f}%/{r['repeats']:<1}")
        lines.append(f"{name:<22} {w['hosts']:>7} {w['requests']:>5}  " + "  ".join(f"{c:>18}" for c in cells))
    so = results.get("scale_out") or {}
    if so:
        lines += ["", "scale-out: publishers x batch -> requests/s (hosts leased twice, lost races, worker peak RSS)"]
        for n, r in sorted(so.items()):
            rss = ", ".join(f"{m:.0f}" for m in r["worker_peak_rss_mb"])
            lines.append(
                f"  {n} worker(s): {r['publishers']} x {r['batch']}: {r['throughput_rps']:.0f} req/s over "
                f"{r['duration_s']:.1f} s ({r['batches']} batches; leased twice {r['double_leases']}, "
                f"mismatched {r['mismatched_leases']}; lost races {r['lost_races']}; RSS MiB {rss})"
            )
            cpu = r.get("cpu_s") or {}
            if cpu.get("capacity"):
                lines.append(
                    f"    CPU s of {cpu['capacity']:.1f} available: busy {cpu['busy']:.1f} = workers "
                    f"{cpu['workers']:.1f} + publishers {cpu['publishers']:.1f} + broker, database and rest "
                    f"{cpu['broker_db_and_rest']:.1f} (of which broker {cpu.get('broker', 0):.1f}, "
                    f"database {cpu.get('database', 0):.1f})"
                )
    mem = (results.get("memory") or {}).get("worker_peak_rss_mb") or {}
    if mem:
        lines += ["", "rdb worker peak RSS (VmHWM): " + ", ".join(f"{k} hosts {v:.0f} MiB" for k, v in mem.items())]
    lines += ["", "goals:"]
    for g in results.get("goals", []):
        ratio = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}"
        op = "<=" if g["kind"] == "max" else ">="
        verdict = {True: "met", False: "MISSED", None: "not measured"}[g["met"]]
        lines.append(f"  {g['goal']:<52} {ratio:>9}  (goal {op} {g['limit']:g})  {verdict}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
