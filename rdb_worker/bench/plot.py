"""The PNG: time per tick against lab size, one line per variant (log-log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results.get("lab_growth_sizes") or [])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    styles = {"rdb": "o-", "in-process": "s--", "per-request": "^-", "celery": "v-", "floor": "D:"}
    requests = None
    for variant in results["variants"]:
        xs, ys, lo, hi = [], [], [], []
        for size in sizes:
            w = results["workloads"].get(f"lab-growth/{size}")
            r = w and w["variants"].get(variant)
            if r:
                requests = w["requests"]
                xs.append(size)
                ys.append(r["median_s"])
                lo.append(r["median_s"] - r["min_s"])
                hi.append(r["max_s"] - r["median_s"])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=styles.get(variant, "o-"), capsize=3, label=variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hosts in the lab")
    ax.set_ylabel("seconds per tick (median, min-max)")
    ax.set_title(f"suite-heavy tick of {requests} acquire requests vs lab size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
