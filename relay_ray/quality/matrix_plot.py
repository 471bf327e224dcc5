"""The Pareto plot of a matrix run: accuracy against latency (concurrency 1), against the large
compute share (token positions) and against the large time share (the large tier's busy time,
concurrency 1); every policy a point with its 95% interval, the rstitch tau sweep and the
relaygen cue sets as curves. Needs matplotlib (the ``dev`` extra)."""

from __future__ import annotations

from pathlib import Path

from relay_ray.quality.matrix import Group
from relay_ray.quality.matrix_report import Row, curve_rows, large_compute

_CURVES = {"rstitch": ("tau sweep (rstitch)", "tab:blue", "o"), "relaygen": ("cue sets (relaygen)", "tab:orange", "s")}
_SKIP = (Group.PEER, Group.COST, Group.HANDOFF, Group.CALL_FLOOR)


def _points(rows: list[Row], compute: dict[str, float]) -> list[tuple]:
    """(row, c=1 latency, compute share, time share) of every plotted row."""
    out = []
    for r in rows:
        if r.full is None or r.entry.group in _SKIP:
            continue
        lat = r.latency
        time = lat.large_time_share if lat is not None else None
        out.append((r, lat.mean_client_ms if lat is not None else None,
                    large_compute(r, compute),
                    time if time else None))  # log axis: rows that never use the large tier are left out
    return out


_PANELS = ((1, "mean latency at concurrency 1 (ms, log scale)"),
           (2, "large compute share (large-tier token positions / large-only's)"),
           (3, "large time share (large-tier busy time / large-only's, c=1; log scale)"))


def _errorbar(ax, x: float, r: Row, **kw) -> None:
    f = r.full
    ax.errorbar([x], [100 * f.accuracy], yerr=[[100 * (f.accuracy - f.accuracy_low)], [100 * (f.accuracy_high - f.accuracy)]],
                capsize=3, **kw)


def _curves(ax, points, curve: set, index: int) -> None:
    for policy, (name, color, marker) in _CURVES.items():
        pts = sorted([(p[index], p[0]) for p in points if id(p[0]) in curve and p[0].entry.policy == policy
                      and p[index] is not None], key=lambda t: t[0])
        if pts:
            ax.plot([x for x, _ in pts], [100 * r.full.accuracy for _, r in pts], color=color, alpha=0.5, label=name)
            for x, r in pts:
                _errorbar(ax, x, r, color=color, marker=marker, markersize=4, alpha=0.7)


def _policies(ax, points, index: int) -> None:
    for r, *xy in points:
        x = xy[index - 1]
        if x is None or r.entry.group is not Group.MAIN:
            continue
        random = r.entry.policy == "random"
        _errorbar(ax, x, r, color="grey" if random else "black", marker="x" if random else "D", markersize=5)
        ax.annotate(r.entry.label, (x, 100 * r.full.accuracy), textcoords="offset points", xytext=(4, -10),
                    fontsize=7, color="grey" if random else "black")


def plot(rows: list[Row], path: str | Path, title: str, compute: dict[str, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _points(rows, compute or {})
    curve = {id(r) for r in curve_rows(rows)}
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(18, 6), sharey=True)
    for ax, (index, xlabel) in zip(axes, _PANELS):
        _curves(ax, points, curve, index)
        _policies(ax, points, index)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[2].set_xscale("log")
    axes[0].set_ylabel("accuracy (%), 95% Wilson interval")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
