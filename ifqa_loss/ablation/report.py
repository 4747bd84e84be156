"""Tables, plots and the sample grid of a finished sweep (merging shards written to one or many folders).

Per row (a setting without its seed): for each metric the mean over seeds of the per-seed mean
over held-out images, the spread (sample standard deviation over seeds; 0 with one seed), the
difference to the weight-0 baseline, and the p-value of a paired test over images (each image's
value averaged over the seeds both rows share) against the baseline, raw and Holm-adjusted over
the settings (the table's ``*`` uses the adjusted one).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from .config import SweepConfigError, config_from_dict, plan_settings
from .evaluate import LOWER_IS_BETTER, holm, paired_test

__all__ = ["collect", "summarize", "write_report"]


def collect(run_dirs: list[str | os.PathLike]) -> tuple[dict, list[dict]]:
    """Read the config and every finished setting from one or more run folders (shards) -> (config, records)."""
    config, records, seen = None, [], set()
    for folder in map(Path, run_dirs):
        stored = folder / "config.json"
        if not stored.is_file():
            raise SweepConfigError(f"{folder} is not an ablation run folder (no config.json)")
        this = json.loads(stored.read_text())
        if config is not None and this != config:
            raise SweepConfigError(f"{folder} was run with a different sweep than {run_dirs[0]}; shards of one "
                                   "report must share their sweep file")
        config = this
        for done in sorted((folder / "settings").glob("*/done.json")):
            record = json.loads((done.parent / "per_image.json").read_text())
            if record["setting"]["id"] not in seen:
                seen.add(record["setting"]["id"])
                records.append(record)
    return config, records


def summarize(config: dict, records: list[dict], *, require_complete: bool = True) -> dict:
    """Aggregate per-image records into table rows (see module doc); checks that every planned setting is there."""
    cfg = config_from_dict(config)
    planned = plan_settings(cfg)
    by_id = {r["setting"]["id"]: r for r in records}
    missing = [s.id for s in planned if s.id not in by_id]
    if missing and require_complete:
        raise SweepConfigError(f"{len(missing)} of {len(planned)} settings are not finished: {missing[:6]}"
                               f"{' ...' if len(missing) > 6 else ''}; run the missing shards (or resume the sweep)")
    metrics = list(next(iter(by_id.values()))["metrics"]) if by_id else []
    notes: dict[str, str] = {}
    for r in records:
        notes.update(r.get("notes", {}))
    groups: dict[str, list] = {}
    for s in planned:
        if s.id in by_id:
            groups.setdefault(s.group, []).append(s)
    baseline = {s.seed: by_id[s.id] for s in groups.get("baseline", [])}
    rows = []
    for group, members in groups.items():
        first = members[0]
        row = {"setting": group, "metric": first.metric or "-", "weight": first.weight,
               "schedule": first.schedule or "-", "seeds": len(members)}
        for m in metrics:
            per_seed = [float(np.mean(by_id[s.id]["metrics"][m])) for s in members]
            row[f"{m}_mean"] = float(np.mean(per_seed))
            row[f"{m}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
            shared = [s for s in members if s.seed in baseline]
            if first.metric is None or not shared:
                row[f"{m}_delta"], row[f"{m}_p"] = 0.0, float("nan")
                continue
            ours = np.mean([by_id[s.id]["metrics"][m] for s in shared], axis=0)
            base = np.mean([baseline[s.seed]["metrics"][m] for s in shared], axis=0)
            row[f"{m}_delta"] = float(np.mean(ours - base))
            row[f"{m}_p"] = paired_test(ours, base, cfg.evaluation.test)
        rows.append(row)
    for m in metrics:  # many settings, many tests: the table's stars use Holm-adjusted p-values
        for row, p in zip(rows, holm([r[f"{m}_p"] for r in rows]), strict=True):
            row[f"{m}_p_holm"] = p
    images = len(next(iter(by_id.values()))["images"]) if by_id else 0
    return {"name": cfg.name, "metrics": metrics, "notes": notes, "test": cfg.evaluation.test, "images": images,
            "seeds": cfg.seeds, "rows": rows, "missing": missing,
            "per_seed": [{**r["setting"], **{m: float(np.mean(v)) for m, v in r["metrics"].items()}} for r in records]}


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def markdown_table(summary: dict) -> str:
    """Markdown: ``mean ± std`` per metric (best bold), ``*`` where p < 0.05 against the baseline."""
    metrics, rows = summary["metrics"], summary["rows"]
    header = ["setting", "weight", "schedule", "seeds"] + [
        f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" + (f" ({summary['notes'][m]})" if m in summary["notes"] else "")
        for m in metrics]
    best = {}
    for m in metrics:
        values = [r[f"{m}_mean"] for r in rows]
        best[m] = min(values) if m in LOWER_IS_BETTER else max(values)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["setting"], f"{r['weight']:g}", r["schedule"], str(r["seeds"])]
        for m in metrics:
            text = f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}"
            if r[f"{m}_mean"] == best[m] and len(rows) > 1:
                text = f"**{text}**"
            if r[f"{m}_p_holm"] == r[f"{m}_p_holm"] and r[f"{m}_p_holm"] < 0.05:
                text += " *"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    test = {"wilcoxon": "Wilcoxon signed-rank", "ttest": "paired t-test"}[summary["test"]]
    lines += ["", f"Mean ± std over {len(summary['seeds'])} seed(s), {summary['images']} held-out images; "
              f"* p < 0.05 ({test} over images against the weight-0 baseline, Holm-adjusted over the "
              f"{sum(r['metric'] != '-' for r in rows)} settings)."]
    if summary["test"] == "wilcoxon" and summary["images"] and 2.0 ** (1 - summary["images"]) >= 0.05:
        lines.append(f"With {summary['images']} images the smallest possible two-sided Wilcoxon p is "
                     f"{2.0 ** (1 - summary['images']):.3g}: hold out more images for a test that can reject.")
    for m, note in summary["notes"].items():
        lines.append(f"**{m}: {note}** — these numbers test the wiring only and mean nothing.")
    return "\n".join(lines) + "\n"


def _plots(summary: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows, written = summary["rows"], []
    baseline = next((r for r in rows if r["metric"] == "-"), None)
    lines: dict[tuple, list] = {}
    for r in rows:
        if r["metric"] != "-":
            lines.setdefault((r["metric"], r["schedule"]), []).append(r)
    # One panel per metric: a single file to drop into a paper's supplement (and one savefig, which is slow).
    metrics = summary["metrics"]
    cols = min(4, len(metrics))
    panel_rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(panel_rows, cols, figsize=(3.2 * cols, 2.6 * panel_rows), dpi=100, squeeze=False)
    linthresh = min((r["weight"] for r in rows if r["weight"] > 0), default=1.0)
    for ax, m in zip(axes.flat, metrics, strict=False):
        for (term, schedule), members in lines.items():
            pts = sorted(([baseline] if baseline else []) + members, key=lambda r: r["weight"])
            ax.errorbar([p["weight"] for p in pts], [p[f"{m}_mean"] for p in pts], yerr=[p[f"{m}_std"] for p in pts],
                        marker="o", capsize=3, label=f"{term} ({schedule})")
        ax.set_xscale("symlog", linthresh=linthresh)
        note = summary["notes"].get(m)
        ax.set_title(f"{m} {'(lower is better)' if m in LOWER_IS_BETTER else ''}" + (f"\n[{note}]" if note else ""),
                     fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("loss weight (mean ± std over seeds)", fontsize=8)
    fig.tight_layout()
    path = out / "metrics_vs_weight.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    quality = next((m for m in ("ifqa", "ifqa++", "gfiqa", "gfiqa-resnet50") if m in summary["metrics"]), "lpips")
    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=100)
    for (term, schedule), members in lines.items():
        pts = sorted(([baseline] if baseline else []) + members, key=lambda r: r["weight"])
        ax.errorbar([p["psnr_mean"] for p in pts], [p[f"{quality}_mean"] for p in pts],
                    xerr=[p["psnr_std"] for p in pts], yerr=[p[f"{quality}_std"] for p in pts],
                    marker="o", capsize=3, label=f"{term} ({schedule})")
        for p in pts:
            ax.annotate(f"{p['weight']:g}", (p["psnr_mean"], p[f"{quality}_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("PSNR (dB) — fidelity")
    note = summary["notes"].get(quality)
    ax.set_ylabel(f"{quality} — quality" + (f" [{note}]" if note else ""))
    ax.set_title("fidelity vs quality (labels: weight)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "tradeoff.png"
    fig.savefig(path)
    plt.close(fig)
    return [*written, path]


def _sample_grid(run_dirs: list[Path], summary: dict, path: Path) -> Path | None:
    """Rows: degraded input, ground truth, then per setting (first seed) the restoration and its quality map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from PIL import Image

    def find(relative: str) -> Path | None:
        return next((d / relative for d in run_dirs if (d / relative).is_file()), None)

    seed = summary["seeds"][0]
    rows = []
    for prefix, label in (("lq", "degraded"), ("gt", "ground truth")):
        rows.append((label, [find(f"samples/{prefix}_{i:03d}.png") for i in range(64)]))
    for r in summary["rows"]:
        sid = f"{r['setting']}-s{seed}"
        rows.append((r["setting"], [find(f"settings/{sid}/samples/restored_{i:03d}.png") for i in range(64)]))
        rows.append((f"{r['setting']} map", [find(f"settings/{sid}/samples/map_{i:03d}.png") for i in range(64)]))
    rows = [(label, [p for p in paths if p is not None]) for label, paths in rows]
    rows = [(label, paths) for label, paths in rows if paths]
    if not rows:
        return None
    cols = max(len(paths) for _, paths in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols + 1.4, 1.3 * len(rows)), dpi=110, squeeze=False)
    for (label, paths), ax_row in zip(rows, axes, strict=True):
        for j, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(paths):
                ax.imshow(Image.open(paths[j]).convert("RGB"))
            else:
                ax.axis("off")
        ax_row[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_dir: str | os.PathLike, sources: list[str | os.PathLike] = (), *,
                 require_complete: bool = True) -> Path:
    """Write results.csv, results.json, results.md, plots/ and samples.png into ``run_dir``.

    ``sources``: more run folders (shards run without a shared file system) merged with ``run_dir``.
    Returns the path of results.md.
    """
    from .runner import write_atomic

    run_dir = Path(run_dir)
    folders = [run_dir, *map(Path, sources)]
    config, records = collect(folders)
    summary = summarize(config, records, require_complete=require_complete)
    columns = ["setting", "metric", "weight", "schedule", "seeds"] + [
        f"{m}_{k}" for m in summary["metrics"] for k in ("mean", "std", "delta", "p", "p_holm")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()} for r in summary["rows"])
    write_atomic(run_dir / "results.csv", buffer.getvalue())
    write_atomic(run_dir / "results.json", json.dumps({**summary, "config": config}, indent=2, allow_nan=True))
    markdown = markdown_table(summary)
    write_atomic(run_dir / "results.md", f"# {summary['name']}\n\n{markdown}")
    _plots(summary, run_dir / "plots")
    _sample_grid(folders, summary, run_dir / "samples.png")
    return run_dir / "results.md"
