"""The two figures of RESULTS.md: cumulative cost per round, and the policy sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

STYLE = {
    "full_history": ("#d62728", "-", "full history (resend everything)"),
    "last_20_messages": ("#ff7f0e", "--", "last 20 messages (seed 001)"),
    "seed_rolling_snapshot": ("#9467bd", "-.", "rolling snapshot at 180K (seed 000)"),
    "kimi_magic": ("#1f77b4", "-", "kimi_magic default"),
    "kimi_magic_economy": ("#2ca02c", ":", 'kimi_magic preset="economy"'),
}


def cumulative_cost(strategies: dict[str, Any], path: Path, model: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    for name, (color, dash, label) in STYLE.items():
        data = strategies.get(name)
        if not data:
            continue
        ys = data["cumulative_cost"]
        ax.plot(range(1, len(ys) + 1), ys, dash, color=color, lw=2.2,
                label=f"{label}: ${ys[-1]:.2f}; facts in context {data['facts_retained']:.0%}, "
                      f"recallable {data['facts_recallable']:.0%}")
    ax.set_xlabel("round (notebook cell)")
    ax.set_ylabel("cumulative cost, USD")
    ax.set_title(f"Cost of the same 50-round, 224K-token notebook session ({model} prices)")
    ax.grid(alpha=0.3)
    ax.set_xlim(1, 50)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.95)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep(rows: list[dict[str, Any]], path: Path, references: dict[str, float]) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    for ttl, color, marker in (("5m", "#1f77b4", "o"), ("1h", "#2ca02c", "s")):
        pts = sorted((r for r in rows if r["cache_ttl"] == ttl), key=lambda r: r["compact_at"])
        xs = [r["compact_at"] / 1000 for r in pts]
        ax.plot(xs, [r["cost_usd"] for r in pts], marker + "-", color=color, lw=2,
                label=f"compress, {ttl} cache")
        # The two TTLs keep the same facts; a small offset keeps both lines visible.
        offset = 0.015 if ttl == "1h" else 0.0
        bx.plot(xs, [r["facts_retained"] + offset for r in pts], marker + "-", color=color,
                lw=2, label=f"compress, {ttl} cache")
    for name, value in references.items():
        color, dash, label = STYLE[name]
        ax.axhline(value, color=color, ls=dash, lw=1.4, label=f"{label}: ${value:.2f}")
    ticks = sorted({r["compact_at"] / 1000 for r in rows})
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_xticks(ticks, [f"{t:g}K" for t in ticks])
        a.minorticks_off()
        a.set_xlabel("compaction threshold (tokens, log scale)")
        a.grid(alpha=0.3)
    ax.set_ylabel("session cost, USD")
    ax.set_ylim(bottom=0)
    ax.set_title("Cost by compaction threshold")
    ax.legend(fontsize=8)
    bx.set_ylabel("planted facts in the final request")
    bx.set_ylim(-0.05, 1.05)
    bx.set_title("Facts retained by compaction threshold")
    bx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def scale(rows: list[dict[str, Any]], path: Path) -> None:
    """Each command's time against rounds, one line per snapshot count (log-log)."""
    keys = ("resume", "compress", "turn", "snapshot", "rollback", "export")
    snaps = sorted({r["snapshots"] for r in rows})
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.2), dpi=110, sharex=True)
    for ax, key in zip(axes.flat, keys, strict=True):
        for s, dash in zip(snaps, ("-", "--", ":"), strict=False):
            pts = sorted((r["rounds"], r[key]) for r in rows if r["snapshots"] == s)
            ax.plot([p[0] for p in pts], [max(p[1], 1e-4) * 1000 for p in pts], dash,
                    marker="o", lw=2, label=f"{s} snapshots")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(key)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[1]:
        ax.set_xlabel("rounds")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Each command as the session grows (rounds × snapshots)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
