"""The monitor's trends as one PNG (matplotlib, no display needed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any


def plot_trends(reports: list[dict[str, Any]], path: Path) -> Path:
    """Four panels over the window, one line per tenant (and adapter): input drift, knowledge
    gap rate, down-vote rate, mean grounding. Buckets without data leave gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=110, sharex=True)
    panels = [
        (axes[0][0], "input drift (1 - cos vs reference)"),
        (axes[0][1], "knowledge gap rate"),
        (axes[1][0], "down-vote rate"),
        (axes[1][1], "mean grounding"),
    ]
    drawn = [False] * len(panels)

    def line(i: int, points: list[tuple[datetime, float | None]], label: str) -> None:
        kept = [(t, v) for t, v in points if v is not None]
        if kept:
            xs, ys = zip(*kept, strict=True)
            panels[i][0].plot(xs, ys, "o-", label=label, alpha=0.85)
            drawn[i] = True

    many = len(reports) > 1
    for report in reports:
        prefix = f"{report['tenant']}/" if many else ""
        for a in report["adapters"]:
            points = [(_t(p["start"]), p["input_drift"]) for p in a["trend"]]
            line(0, points, prefix + a["adapter"])
        trend = report["trend"]
        label = report["tenant"]
        line(1, [(_t(p["start"]), p["gap_rate"]) for p in trend], label)
        line(2, [(_t(p["start"]), p["downvote_rate"]) for p in trend], label)
        line(3, [(_t(p["start"]), p["grounded_mean"]) for p in trend], label)
    for (ax, title), has in zip(panels, drawn, strict=True):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if has:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    hours = reports[0]["window_hours"] if reports else 0
    fig.suptitle(f"loraplex monitor: last {hours:g} h")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
