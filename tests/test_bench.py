"""rdb-bench at its tiny size on the test servers: it runs, and its outputs are complete.

No timing assertions: speed goals live in the benchmark (docs/performance.md), never in
tests. Needs the bench extra (celery, matplotlib).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("celery")
pytest.importorskip("matplotlib")

from rdb_worker.bench import cli  # noqa: E402
from rdb_worker.bench.variants import VARIANTS  # noqa: E402


def test_help_lists_workloads_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("suite-heavy", "all-distinct", "mixed", "lab-growth", "scale-out", "tiny", "full", *VARIANTS):
        assert name in out


def test_bad_arguments_are_refused() -> None:
    assert cli.main(["--workloads", "nope"]) == 2
    assert cli.main(["--amqp-url", "amqp://x"]) == 2


def test_tiny_run_writes_every_workload_and_variant(amqp_url: str, admin_db_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--size", "tiny", "--amqp-url", amqp_url, "--db-url", admin_db_url,
                     "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "time per tick" in out and "goals:" in out

    results = json.loads((tmp_path / "results.json").read_text())
    size = cli.SIZES["tiny"]
    expected = ["suite-heavy", "all-distinct", "mixed", *(f"lab-growth/{n}" for n in size.growth)]
    assert list(results["workloads"]) == expected
    assert results["variants"] == list(VARIANTS)
    assert results["lab_growth_sizes"] == list(size.growth)
    for name, workload in results["workloads"].items():
        assert workload["requests"] == size.requests, name
        assert set(workload["variants"]) == set(VARIANTS), name
        for variant, r in workload["variants"].items():
            where = f"{name}/{variant}"
            assert r["repeats"] == size.repeats, where
            assert len(r["samples_s"]) == size.repeats, where
            assert all(math.isfinite(s) and s > 0 for s in r["samples_s"]), where
            assert r["min_s"] <= r["median_s"] <= r["max_s"], where
            assert 0 < r["leased"] <= workload["requests"], where
    # The per-request variants timed a sample and say so; the batched ones did the whole tick.
    heavy = results["workloads"]["suite-heavy"]["variants"]
    assert heavy["per-request"]["sampled_requests"] == heavy["celery"]["sampled_requests"] == size.sample
    assert heavy["rdb"]["sampled_requests"] is None
    # Every variant leases the same hosts' worth on the same lab (the floor ignores suite order only).
    assert len({heavy[v]["leased"] for v in ("rdb", "in-process", "floor")}) == 1
    assert results["workloads"]["mixed"]["update_requests"] == int(size.lab * 0.05)

    for workers in ("1", "2"):
        so = results["scale_out"][workers]
        assert so["workers"] == int(workers)
        assert so["requests"] > 0 and so["throughput_rps"] > 0
        assert so["double_leases"] == 0 and so["mismatched_leases"] == 0
    assert results["memory"]["worker_peak_rss_mb"]
    goals = {g["goal"] for g in results["goals"]}
    assert any(g.startswith("suite-heavy: rdb / floor") for g in goals)
    assert any(g.startswith("scale-out: 2 workers") for g in goals)
    assert all(g["ratio"] is not None for g in results["goals"])

    png = tmp_path / "plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000
