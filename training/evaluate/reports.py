"""Evaluation reports: eval.json (what promotion reads), eval.md, eval.png, per-example JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORST = 5


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_reports(
    out: Path,
    report: dict[str, Any],
    examples: list[dict[str, Any]],
    general_rows: list[dict[str, Any]],
) -> None:
    """eval.json, eval.md, eval.png, eval_examples.jsonl and eval_general.jsonl into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "eval_examples.jsonl", examples)
    write_jsonl(out / "eval_general.jsonl", general_rows)
    (out / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "eval.md").write_text(render_markdown(report))
    plot(report, out / "eval.png")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: verdict, metrics with gates, forgetting, worst examples."""
    verdict = "GO" if report["go"] else "NO-GO"
    data = report["data"]
    lines = [
        f"# Evaluation: adapter vs base ({report['kind']})",
        "",
        f"**{verdict}**: every gate must pass.",
        "",
        f"- {data['examples']} examples from `{data['split']}.jsonl`; task: "
        f"{json.dumps((report.get('task') or {}).get('metrics', ['preference_accuracy']))}",
        f"- backend: {report['backend']['name']} on {report['backend']['device']}, "
        f"{report['backend']['answers']} answers in {report['backend']['generate_s']} s "
        f"({report['backend']['answers_per_s']} /s) after {report['backend']['startup_s']} s "
        "start-up",
        f"- gates from: **{report['gates']['source']}** ({report['gates'].get('path') or 'built-in'})",
        "",
    ]
    if report["gates"].get("overridden"):
        lines += ["Overridden at evaluation time:", ""]
        lines += [
            f"- `{k}`: {v['recorded']} recorded, {v['override']} applied"
            for k, v in report["gates"]["overridden"].items()
        ]
        lines.append("")
    lines += [
        "## Metrics",
        "",
        "| metric | base | adapter | difference | gate | pass |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in report["metrics"].items():
        gate = "; ".join(m["gate"]) if m["gate"] else ""
        ok = "" if m["pass"] is None else ("yes" if m["pass"] else "**no**")
        lines.append(
            f"| {name} | {_fmt(m['base'])} | {_fmt(m['adapter'])} | "
            f"{m['difference']:+.4f} | {gate} | {ok} |"
        )
    general = report.get("general")
    if general:
        lines += [
            "",
            "## Forgetting: general set",
            "",
            "| category | items | base | adapter | drop |",
            "|---|---|---|---|---|",
        ]
        rows = [("overall", general["overall"]), *general["categories"].items()]
        lines += [
            f"| {k} | {v['items']} | {v['base']:.3f} | {v['adapter']:.3f} | {v['drop']:+.3f}"
            + ("" if v.get("gated", True) else " (too few items to gate)")
            + " |"
            for k, v in rows
        ]
    lines += ["", "## Gates", "", "| check | value | pass |", "|---|---|---|"]
    lines += [
        f"| {c['name']} | {c['value']:.4f} | {'yes' if c['passed'] else '**no**'}"
        + (f" ({c['note']})" if c.get("note") else "")
        + " |"
        for c in report["check_list"]
    ]
    if report.get("worst"):
        lines += ["", "## Worst examples", ""]
        for w in report["worst"]:
            lines += [
                f"### {w['id']}",
                "",
                f"- prompt: {w['prompt'][:300]!r}",
                f"- expected: {w['expected'][:300]!r}",
                f"- adapter: {w['adapter_answer'][:300]!r}",
                f"- base: {w['base_answer'][:300]!r}",
                f"- scores: {json.dumps(w['scores'])}",
                "",
            ]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "## Data", ""] + [f"- `{p}` sha256 `{d}`" for p, d in data["digests"].items()]
    lines += ["", "![eval](eval.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Base vs adapter per metric (scores, then loss) and per general-set category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    scores = [k for k, m in metrics.items() if m["higher_is_better"]]
    losses = [k for k, m in metrics.items() if not m["higher_is_better"]]
    general = report.get("general") or {}
    cats = ["overall", *general.get("categories", {})] if general else []
    panels = [
        (scores, metrics, "task metrics (higher is better)"),
        (losses, metrics, "answer loss (lower is better)"),
        (
            cats,
            {"overall": general.get("overall"), **general.get("categories", {})},
            "general set accuracy (forgetting)",
        ),
    ]
    panels = [p for p in panels if p[0]]
    widths = [max(len(p[0]), 1) + 1 for p in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3 + 1.1 * sum(widths), 4.2),
        dpi=110,
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, (names, source, title) in zip(axes[0], panels, strict=True):
        xs = range(len(names))
        ax.bar(
            [x - 0.2 for x in xs],
            [source[n]["base"] for n in names],
            0.4,
            label="base",
            color="#8c8c8c",
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [source[n]["adapter"] for n in names],
            0.4,
            label="adapter",
            color="#4C72B0",
        )
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{'GO' if report['go'] else 'NO-GO'}: adapter vs base", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
