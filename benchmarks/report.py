"""What benchmarks/run.py measured, as one record per comparison, and its three outputs.

results.json (every sample), results.md (medians, min–max, ratio ours/peer, target,
met) and results.png (one bar per comparison, each with its own target mark).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """`ratio`: median ours / median peer at most `value`; `absolute`: ours at most `value`."""

    kind: str
    value: float
    # Which statistic of ours an absolute target judges: a peak is judged by its maximum.
    judge: str = "median"

    def text(self, unit: str) -> str:
        if self.kind == "ratio":
            return f"≤ {self.value:g}×"
        return f"≤ {self.value:g} {unit}" + (" (max)" if self.judge == "max" else "")


@dataclass
class Result:
    """One row of the table: ours and the peer on the same input, alternating."""

    id: str
    work: str
    peer: str
    target: Target
    unit: str = "s"
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Conditions besides the numbers that the target also needs (e.g. "no false rebuild").
    failures: list[str] = field(default_factory=list)
    # Figures measured beside the runs that explain them (e.g. row 6's floor).
    context: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.theirs or statistics.median(self.theirs) <= 0:
            return None
        return statistics.median(self.ours) / statistics.median(self.theirs)

    def judged(self) -> float | None:
        """The figure the target is compared with (None when nothing was measured)."""
        if self.target.kind == "ratio":
            return self.ratio
        if not self.ours:
            return None
        return max(self.ours) if self.target.judge == "max" else statistics.median(self.ours)

    @property
    def met(self) -> bool | None:
        figure = self.judged()
        if figure is None:
            return None
        return figure <= self.target.value and not self.failures


def _summary(samples: list[float]) -> dict[str, Any] | None:
    if not samples:
        return None
    return {
        "samples": samples,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def to_json(result: Result) -> dict[str, Any]:
    return {
        "id": result.id,
        "work": result.work,
        "peer": result.peer,
        "unit": result.unit,
        "target": {
            "kind": result.target.kind,
            "value": result.target.value,
            "judge": result.target.judge,
            "text": result.target.text(result.unit),
        },
        "ours": _summary(result.ours),
        "peer_result": _summary(result.theirs),
        "ratio": result.ratio,
        "met": result.met,
        "failures": result.failures,
        "notes": result.notes,
        "context": result.context,
        "skipped": result.skipped,
        "error": result.error,
    }


def write_json(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    document = {"meta": meta, "comparisons": [to_json(r) for r in results]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _figure(samples: list[float], unit: str) -> str:
    if not samples:
        return "—"
    digits = 0 if unit == "MiB" else 2 if statistics.median(samples) >= 1 else 3
    median = f"{statistics.median(samples):.{digits}f}"
    if len(samples) == 1:
        return f"{median} {unit}"
    return f"{median} {unit} ({min(samples):.{digits}f}–{max(samples):.{digits}f})"


def _cell(text: str) -> str:
    """A table cell: a bare | would end it, even inside backquotes."""
    return text.replace("|", "\\|")


def _verdict(result: Result) -> str:
    if result.skipped:
        return f"skipped: {result.skipped}"
    if result.error:
        return "error"
    met = result.met
    if met is None:
        return "—"
    return (
        "yes" if met else "**no**" + (f" ({'; '.join(result.failures)})" if result.failures else "")
    )


def write_markdown(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    runs = meta["runs"]
    lines = [
        "# supermin benchmarks",
        "",
        f"`{meta['command']}` on {meta['date']}, checkout {meta.get('revision', '?')}: "
        f"{meta['machine']}.",
        f"{runs} run{'s' if runs != 1 else ''} of each side, alternating peer and ours; "
        "figures are medians with (min–max)."
        + (" **--quick**: small inputs." if meta["quick"] else ""),
        f"{meta['seconds']:.0f} s in all; 1-minute load average {meta['load_1min'][0]} "
        f"before, {meta['load_1min'][1]} after (other work on the machine slows both sides).",
        "",
        "| # | work | ours | peer | peer figure | ours/peer | target | met |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for number, r in enumerate(results, 1):
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(
            f"| {number} | {_cell(r.work)} | {_figure(r.ours, r.unit)} | {_cell(r.peer)} | "
            f"{_figure(r.theirs, r.unit)} | {ratio} | {r.target.text(r.unit)} | {_verdict(r)} |"
        )
    lines += ["", "## Notes", ""]
    for number, r in enumerate(results, 1):
        said = [*r.notes] + ([f"error: {r.error}"] if r.error else [])
        if said:
            lines.append(f"{number}. `{r.id}`: " + " ".join(said))
    path.write_text("\n".join(lines) + "\n")


def _bar(result: Result) -> tuple[float, float, str] | None:
    """(bar length, target mark, label) on one axis shared by ratio and absolute targets.

    A ratio target plots ours/peer against its own target; an absolute target plots
    ours as a fraction of the target, so its mark sits at 1.
    """
    figure = result.judged()
    if figure is None:
        return None
    if result.target.kind == "ratio":
        return figure, result.target.value, f"{figure:.2f}× (target {result.target.text('')})"
    shown = f"{figure:.3g} {result.unit}"
    return figure / result.target.value, 1.0, f"{shown} (target {result.target.text(result.unit)})"


def write_png(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    # Agg: no display on CI; imported here so JSON and Markdown need no matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(11, 0.55 * len(results) + 1.8))
    ys = list(range(len(results)))[::-1]
    bars = [_bar(r) for r in results]
    drawn = [b[0] for b in bars if b is not None] + [b[1] for b in bars if b is not None]
    low = min([0.05, *drawn]) / 1.5
    high = max([2.0, *drawn]) * 3
    for y, result, bar in zip(ys, results, bars, strict=True):
        if bar is None:
            why = result.skipped or result.error or "no figures"
            ax.text(
                low * 1.1, y, f"not measured: {why}"[:90], va="center", fontsize=8, color="grey"
            )
            continue
        length, mark, label = bar
        colour = "#2e7d32" if result.met else "#c62828"
        ax.barh(y, length, height=0.6, color=colour, alpha=0.85)
        ax.plot([mark, mark], [y - 0.4, y + 0.4], color="black", linewidth=2)
        # Right of both the bar and its mark, so neither hides the figure.
        ax.text(max(length, mark) * 1.1, y, label, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
    ax.set_xlim(low, high)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{n}. {r.id}" for n, r in enumerate(results, 1)], fontsize=9)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(
        "ours / peer (median), or ours / absolute target — shorter is better; "
        "black mark = target; green met, red not"
    )
    ax.set_title(f"supermin vs peers — {meta['date']}, {meta['runs']} run(s) each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
