"""Figures of a finished sweep: Δ vs weight per metric, optimised vs judged gain, and the sample grid.

Every panel: y labelled with the metric, its unit and direction, and [optimised] / [judge]; error bars
are the 95 % interval over seeds (with fewer than 3 seeds: the per-seed deltas as dots, no bars);
``*`` above a point marks Holm p < 0.05 with an interval excluding 0; the baseline is drawn once (Δ = 0).
RANDOM WEIGHTS / RANDOM BACKBONE / MEANINGLESS labels are printed on the figures themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plots", "sample_grid", "UNITS"]

UNITS = {"psnr": "dB"}  # metrics with a unit (the others are unitless scores)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _label(summary: dict, m: str) -> str:
    unit = f" ({UNITS[m]})" if m in UNITS else ""
    arrow = "↓ better" if m in summary["lower_is_better"] else "↑ better"
    return f"Δ {m}{unit} vs baseline, {arrow}"


def _banner(fig, summary: dict, metrics: list[str]) -> None:
    flagged = [f"{m}: {summary['notes'][m]}" for m in metrics
               if any(k in summary["notes"].get(m, "") for k in ("RANDOM", "MEANINGLESS"))]
    if flagged:
        fig.text(0.5, 0.995, "; ".join(flagged), ha="center", va="top", fontsize=8, color="red", weight="bold",
                 wrap=True)


def _lines(summary: dict) -> dict:
    lines: dict[tuple, list] = {}
    for r in summary["rows"]:
        if r["metric"] != "-":
            lines.setdefault((r["metric"], r["schedule"]), []).append(r)
    return lines


def _err(rows: list[dict], m: str, values: list[float], summary: dict):
    """Asymmetric error bars from each row's 95 % interval over seeds (None without inference)."""
    import numpy as np

    if not summary["inference"]:
        return None
    low = [v - r[f"{m}_ci_low"] if r[f"{m}_ci_low"] is not None else 0 for v, r in zip(values, rows, strict=True)]
    high = [r[f"{m}_ci_high"] - v if r[f"{m}_ci_high"] is not None else 0 for v, r in zip(values, rows, strict=True)]
    return np.clip(np.asarray([low, high], float), 0, None)


def _draw(ax, rows, xs, m: str, summary: dict, **style) -> None:
    ys = [r[f"{m}_delta"] for r in rows]
    if summary["inference"]:
        line = ax.errorbar(xs, ys, yerr=_err(rows, m, ys, summary), marker="o", capsize=3, **style)
    else:
        line = ax.plot(xs, ys, marker="o", **style)[0]
        for x, r in zip(xs, rows, strict=True):
            seeds = r[f"{m}_seed_deltas"] or []
            ax.scatter([x] * len(seeds), seeds, s=10, alpha=0.6, color="grey")
    for x, y, r in zip(xs, ys, rows, strict=True):
        if r[f"{m}_star"]:
            ax.annotate("*", (x, r[f"{m}_ci_high"] if r[f"{m}_ci_high"] is not None else y), ha="center",
                        va="bottom", fontsize=12, weight="bold")
    return line


def plots(summary: dict, out: Path) -> list[Path]:
    """``metrics_vs_weight.png`` (one panel per metric) and ``tradeoff.png`` (optimised vs judged gain)."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    metrics, lines = summary["metrics"], _lines(summary)
    weights = sorted({r["weight"] for r in summary["rows"] if r["weight"] > 0}) or [1.0]
    cols = min(4, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 2.9 * rows_n + 0.5), dpi=100, squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        ax.axhline(0, color="black", lw=1, ls="--", label="baseline (weight 0)")
        for (term, schedule), members in lines.items():
            members = sorted(members, key=lambda r: r["weight"])
            _draw(ax, members, [r["weight"] for r in members], m, summary, label=f"{term} ({schedule})")
        ax.set_xscale("log" if len(weights) > 1 and weights[-1] / weights[0] > 20 else "linear")
        ax.set_xlabel("loss weight", fontsize=7)
        ax.set_ylabel(_label(summary, m), fontsize=7)
        note = summary["notes"].get(m)
        ax.set_title(f"{m} [{summary['kinds'][m]}]" + (" (primary)" if m == summary["primary"] else "")
                     + (f"\n{note}" if note else ""), fontsize=8,
                     color="red" if note and ("RANDOM" in note or "MEANINGLESS" in note) else "black")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    caption = ("error bars: 95% t-interval over seeds; * Holm p<0.05 and interval excludes 0" if summary["inference"]
               else "fewer than 3 seeds: grey dots are per-seed deltas, no interval (no inference possible)")
    fig.supxlabel(caption, fontsize=8)
    _banner(fig, summary, metrics)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = out / "metrics_vs_weight.png"
    fig.savefig(path)
    plt.close(fig)
    written = [path]
    primary = summary["primary"]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.axhline(0, color="black", lw=0.8, ls="--")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.plot([0], [0], "ks", label="baseline (weight 0)")
    for (term, schedule), members in lines.items():
        if f"{term}_delta" not in members[0]:
            continue
        members = sorted(members, key=lambda r: r["weight"])
        xs = [r[f"{primary}_delta"] for r in members]
        ys = [r[f"{term}_delta"] for r in members]

        ax.errorbar(xs, ys, xerr=_err(members, primary, xs, summary), yerr=_err(members, term, ys, summary),
                    marker="o", capsize=3,
                    label=f"{term} ({schedule})")
        for x, y, r in zip(xs, ys, members, strict=True):
            ax.annotate(f"w={r['weight']:g}" + (" *" if r[f"{primary}_star"] else ""), (x, y), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.set_ylabel(f"optimised: {_label(summary, term)}" + (f"\n[{summary['notes'][term]}]"
                                                               if term in summary["notes"] else ""), fontsize=8)
    ax.set_xlabel(f"judge: {_label(summary, primary)}" + (f"\n[{summary['notes'][primary]}]"
                                                         if primary in summary["notes"] else ""), fontsize=8)
    ax.set_title("optimised gain vs judged gain (bars: 95% CI over seeds)" if summary["inference"]
                 else "optimised vs judged gain (fewer than 3 seeds: no interval)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _banner(fig, summary, [primary, *{t for t, _ in lines}])
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = out / "tradeoff.png"
    fig.savefig(path)
    plt.close(fig)
    return [*written, path]


def sample_grid(run_dirs: list[Path], summary: dict, path: Path) -> Path | None:
    """Degraded input, ground truth, then per setting (first seed) the restoration and its quality map.

    Each map has a colour bar (0 fake .. 1 real) and its mean score; RANDOM labels are on the figure.
    """
    plt = _pyplot()
    from matplotlib import cm, colors
    from PIL import Image

    def find(relative: str) -> Path | None:
        return next((d / relative for d in run_dirs if (d / relative).is_file()), None)

    seed = summary["seeds"][0]
    rows = []
    for prefix, label in (("lq", "degraded"), ("gt", "ground truth")):
        rows.append((label, [find(f"samples/{prefix}_{i:03d}.png") for i in range(64)], None))
    for r in summary["rows"]:
        sid = f"{r['setting']}-s{seed}"
        info = find(f"settings/{sid}/samples/maps.json")
        maps = json.loads(info.read_text()) if info else None
        rows.append((f"{r['setting']}\n(seed {seed})", [find(f"settings/{sid}/samples/restored_{i:03d}.png")
                                                       for i in range(64)], None))
        if maps:
            kind = summary["kinds"].get(maps["metric"], "?")
            rows.append((f"{maps['metric']} map\n[{kind}]", [find(f"settings/{sid}/samples/map_{i:03d}.png")
                                                             for i in range(64)], maps))
    rows = [(label, [p for p in paths if p is not None], maps) for label, paths, maps in rows]
    rows = [row for row in rows if row[1]]
    if not rows:
        return None
    cols = max(len(paths) for _, paths, _ in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 1.6, 1.5 * len(rows) + 0.4), dpi=110,
                             squeeze=False)
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="viridis")
    for (label, paths, maps), ax_row in zip(rows, axes, strict=True):
        for j, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(paths):
                ax.axis("off")
                continue
            ax.imshow(Image.open(paths[j]).convert("RGB"))
            if maps:
                ax.set_title(f"{maps['metric']} {maps['scores'][j]:.3f}", fontsize=6)
                bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
                bar.ax.tick_params(labelsize=5)
        ax_row[0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    flagged = [m for m in summary["metrics"] if "RANDOM" in summary["notes"].get(m, "")]
    if flagged:
        mapped = {maps["metric"] for _, _, maps in rows if maps}
        text = "; ".join(f"{m}: {summary['notes'][m]}" for m in flagged[:4]) + (" ..." if len(flagged) > 4 else "")
        text += " — " + ("the maps and their scores mean nothing" if mapped & set(flagged) else "those numbers mean "
                         "nothing (the maps' network is not among them)")
        fig.suptitle(text, color="red", fontsize=8, weight="bold")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
