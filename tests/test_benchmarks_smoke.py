"""The benchmark harness runs end to end (--quick) and reports every key with sane values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = {"full_history", "last_20_messages", "seed_rolling_snapshot", "kimi_magic",
              "kimi_magic_no_mask", "kimi_magic_economy"}


def test_quick_run_reports_every_key(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                           "--no-llama", "--json", str(out), "--plots", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())

    assert set(r["overhead_ratio_by_context"]) == {"1k", "32k", "128k", "200k"}
    assert 0.2 < r["overhead_ratio_200k"] < 5
    assert r["context_tokens"]["200k"] > 190_000
    # The big paste (a third of what is sent) beside the short question, at every size.
    assert set(r["overhead_paste_ratio_by_context"]) == {"1k", "32k", "128k", "200k"}
    assert all(0.1 < v < 10 for v in r["overhead_paste_ratio_by_context"].values())
    assert r["paste_tokens_by_context"]["200k"] > 50_000
    assert r["messages_1000_rounds"] > 2000 and 0 < r["overhead_ratio_1000_rounds"] < 5
    assert r["compaction_turn"]["compacted"] and r["compaction_turn"]["ours_seconds"] > 0
    # The floor: a raw SDK call on a 1K context answers fast (no 40 ms Nagle stall).
    assert 0 < r["raw_sdk_seconds_by_context"]["1k"] < 0.2
    assert r["server_nodelay"] is True
    assert 0 < r["snapshot_seconds"] < 0.1
    assert 1.0 <= r["snapshot_memory_ratio_1000"] < 5
    assert 0 <= r["stream_cpu_fraction_100tps"] < 1
    assert r["stream_display_updates"] > 1
    assert 0 < r["import_ratio"] < 10

    for key in ("cost_usd", "cost_usd_k3", "cache_hit_rate", "facts_retained",
                "facts_recallable"):
        assert set(r[key]) == STRATEGIES, key
    assert all(v > 0 for v in r["cost_usd"].values())
    # kimi-k3 costs more per token than kimi-k2.6, whatever the strategy.
    assert all(r["cost_usd_k3"][k] > r["cost_usd"][k] for k in STRATEGIES)
    assert all(0 <= v <= 1 for v in r["cache_hit_rate"].values())
    assert r["facts_retained"]["full_history"] == 1.0
    assert r["facts_recallable"]["kimi_magic_economy"] >= r["facts_retained"][
        "kimi_magic_economy"]
    assert r["cost_usd"]["kimi_magic_economy"] < r["cost_usd"]["full_history"]
    ours = r["strategies"]["kimi-k2.6"]["kimi_magic"]
    assert len(ours["cumulative_cost"]) == r["workload"]["rounds"]

    assert {(row["compact_at"], row["cache_ttl"]) for row in r["policy_sweep"]} >= {
        (16_000, "5m"), (16_000, "1h")}
    assert r["facts_retained_real_model"]["with_check"] is None
    assert "skipped" in r["facts_retained_real_model"]["reason"]
    assert (tmp_path / "cost_per_round.png").stat().st_size > 10_000
    assert (tmp_path / "policy_sweep.png").stat().st_size > 10_000
