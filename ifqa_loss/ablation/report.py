"""Tables of a finished sweep (merging shards written to one or many folders): the seed is the unit.

Per row (a setting without its seed) and metric: the mean over seeds of the per-seed mean over the
held-out images, and against the weight-0 baseline the statistics of :mod:`.stats` (per-seed paired
deltas; their mean, 95 % t-interval, p, Holm-adjusted p; a hierarchical-bootstrap interval as the
secondary analysis). Files: ``results.json`` (strict JSON), ``results.csv``, ``results_per_seed.csv``,
``results.md``; plots and the sample grid come from :mod:`.plots`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from . import stats
from .config import SweepConfigError, config_from_dict, plan_settings
from .io import dumps, read_run_config, write_atomic
from .plots import UNITS, plots, sample_grid

__all__ = ["collect", "summarize", "markdown_report", "write_report", "ROW_FIELDS"]

ROW_FIELDS = ("mean", "sd", "delta", "ci_low", "ci_high", "p", "p_holm", "direction", "star", "boot_ci_low",
              "boot_ci_high")
NO_INFERENCE = (f"Fewer than {stats.MIN_SEEDS} seeds: no inference over training randomness is possible "
                "(p and interval are null); the per-seed deltas are shown instead.")


def collect(run_dirs: list[str | os.PathLike]) -> tuple[dict, list[dict]]:
    """Read the config and every finished setting from one or more run folders (shards) -> (config, records)."""
    config, records, seen = None, [], set()
    for folder in map(Path, run_dirs):
        if folder.exists() and not folder.is_dir():
            raise SweepConfigError(f"{folder} is a file, not an ablation run folder")
        stored = folder / "config.json"
        if not stored.is_file():
            raise SweepConfigError(f"{folder} is not an ablation run folder (no config.json)")
        this = read_run_config(folder)
        if config is not None and _comparable(this) != _comparable(config):
            raise SweepConfigError(f"{folder} was run with a different sweep than {run_dirs[0]}; shards of one "
                                   "report must share their sweep file")
        config = config or this  # the report's folder holds the plan (an extended run's is a superset)
        for done in sorted((folder / "settings").glob("*/done.json")):
            record = json.loads((done.parent / "per_image.json").read_text())
            if record["setting"]["id"] not in seen:
                seen.add(record["setting"]["id"])
                records.append(record)
    return config, records


def _comparable(config: dict) -> str:
    cfg = config_from_dict(config, check_imports=False)
    return json.dumps(cfg.shared_definition(), sort_keys=True)


def _plan_check(cfg, planned, by_id: dict) -> None:
    changed = [s.id for s in planned if s.id in by_id and by_id[s.id].get("definition") != cfg.setting_definition(s)]
    if changed:
        raise SweepConfigError(f"settings {changed[:6]} were run with another definition than this sweep's "
                               "(loss, schedule, model, data or evaluation changed, or an older ifqa-loss wrote "
                               "them); rerun them in a new folder")


def summarize(config: dict, records: list[dict], *, require_complete: bool = True) -> dict:
    """Aggregate per-image records into rows (see module doc); checks every planned setting is there and matches."""
    cfg = config_from_dict(config, check_imports=False)
    planned = plan_settings(cfg)
    by_id = {r["setting"]["id"]: r for r in records if r["setting"]["id"] in {s.id for s in planned}}
    missing = [s.id for s in planned if s.id not in by_id]
    if missing and require_complete:
        raise SweepConfigError(f"{len(missing)} of {len(planned)} settings are not finished: {missing[:6]}"
                               f"{' ...' if len(missing) > 6 else ''}; run the missing shards (or resume the sweep)")
    _plan_check(cfg, planned, by_id)
    if not by_id:
        raise SweepConfigError("no finished setting to report yet")
    first = next(iter(by_id.values()))
    metrics = list(first["metric_order"])
    kinds, notes, lower = {}, {}, set()
    for r in by_id.values():
        kinds.update(r["kinds"])
        notes.update(r.get("notes", {}))
        lower.update(r["lower_is_better"])
    primary = cfg.evaluation.primary or next((m for m in metrics if kinds[m] == "judge"), metrics[0])
    if primary not in metrics:
        raise SweepConfigError(f"evaluation.primary {primary!r} is not a metric of this run; choose from {metrics}")
    values = {sid: {m: _values(r, m) for m in metrics} for sid, r in by_id.items()}
    groups: dict[str, list] = {}
    for s in planned:
        if s.id in by_id:
            groups.setdefault(s.group, []).append(s)
    baseline = {s.seed: s.id for s in groups.get("baseline", [])}
    per_seed, rows = [], []
    for group, members in groups.items():
        head = members[0]
        row = {"setting": group, "metric": head.metric or "-", "weight": head.weight,
               "schedule": head.schedule or "-", "seeds": len(members)}
        for m in metrics:
            means = [float(np.mean(values[s.id][m])) for s in members]
            row[f"{m}_mean"] = float(np.mean(means))
            row[f"{m}_sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else None
            paired = [s for s in members if s.seed in baseline and head.metric is not None]
            diffs = [np.asarray(values[s.id][m]) - np.asarray(values[baseline[s.seed]][m]) for s in paired]
            seed_deltas = [float(np.mean(d)) for d in diffs]
            result = stats.seed_level(seed_deltas) if paired else {}
            row[f"{m}_delta"] = result.get("delta")
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = result.get("ci_low"), result.get("ci_high")
            row[f"{m}_p"] = result.get("p")
            row[f"{m}_seed_deltas"] = seed_deltas if paired else None
            row[f"{m}_direction"] = stats.direction(row[f"{m}_delta"], m in lower) if paired else None
            boot = (None, None)
            if paired and all(d.size > 1 for d in diffs):
                boot = stats.hierarchical_bootstrap(diffs, resamples=cfg.evaluation.bootstrap)
            row[f"{m}_boot_ci_low"], row[f"{m}_boot_ci_high"] = boot
        for s in members:
            entry = {"setting": group, "id": s.id, "seed": s.seed}
            for m in metrics:
                entry[m] = float(np.mean(values[s.id][m]))
                entry[f"{m}_delta"] = (float(np.mean(np.asarray(values[s.id][m]) - values[baseline[s.seed]][m]))
                                       if head.metric is not None and s.seed in baseline else None)
            per_seed.append(entry)
        rows.append(row)
    tested = [r for r in rows if r["metric"] != "-"]
    for m in metrics:  # one family per metric: every setting against the baseline
        for row, p in zip(tested, stats.holm([r[f"{m}_p"] for r in tested]), strict=True):
            row[f"{m}_p_holm"] = p
            low, high = row[f"{m}_ci_low"], row[f"{m}_ci_high"]
            row[f"{m}_star"] = bool(p is not None and p < stats.ALPHA and low is not None
                                    and (low > 0 or high < 0))
    for row in rows:
        for m in metrics:
            row.setdefault(f"{m}_p_holm", None)
            row.setdefault(f"{m}_star", None)
    inference = min((r["seeds"] for r in rows), default=0) >= stats.MIN_SEEDS
    return {"name": cfg.name, "primary": primary, "metrics": metrics, "kinds": kinds, "notes": notes,
            "lower_is_better": sorted(lower), "images": len(first["images"]), "seeds": cfg.seeds,
            "inference": inference, "statement": None if inference else NO_INFERENCE,
            "analysis": {"primary": "mean of per-seed paired deltas (same seed, same images); 95% Student-t "
                                    "interval over seeds; one-sample t-test (scipy.stats.ttest_1samp); Holm over "
                                    "settings per metric (statsmodels multipletests)",
                         "secondary": f"hierarchical bootstrap ({cfg.evaluation.bootstrap} resamples): seeds, then "
                                      "images within each seed; percentile 95% interval (boot_ci_*)",
                         "star": "Holm-adjusted p < 0.05 and the interval excludes 0; bold: starred and better"},
            "rows": rows, "missing": missing, "per_seed": per_seed}


def _values(record: dict, metric: str) -> np.ndarray:
    if metric in record.get("set_metrics", {}):
        return np.asarray([np.nan if record["set_metrics"][metric] is None else record["set_metrics"][metric]])
    return np.asarray([np.nan if v is None else v for v in record["metrics"][metric]], dtype=float)


def _p(p) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def metric_label(summary: dict, m: str) -> str:
    """``psnr [judge] (dB, ↑)`` and its note (RANDOM WEIGHTS, conventions): the label of a metric everywhere."""
    unit = UNITS.get(m)
    arrow = "↓ lower is better" if m in summary["lower_is_better"] else "↑ higher is better"
    note = summary["notes"].get(m)
    return f"{m} [{summary['kinds'][m]}] ({unit + ', ' if unit else ''}{arrow})" + (f" — {note}" if note else "")


def _delta_cell(row: dict, m: str, summary: dict) -> str:
    if row["metric"] == "-":
        return "(baseline)"
    if not summary["inference"] or row[f"{m}_ci_low"] is None:
        deltas = row[f"{m}_seed_deltas"] or []
        d = stats.decimals_for(None, None, fallback=float(np.std(deltas)) if len(deltas) > 1 else None)
        return "per-seed Δ: " + ", ".join(f"{x:+.{d}f}" for x in deltas)
    text = stats.format_estimate(row[f"{m}_delta"], row[f"{m}_ci_low"], row[f"{m}_ci_high"], sign=True)
    if row[f"{m}_star"]:
        text = f"**{text}** *" if row[f"{m}_direction"] == "better" else f"{text} *"
    return text


def _metric_table(summary: dict, m: str) -> list[str]:
    lines = ["| setting | seeds | mean | Δ vs baseline [95% CI over seeds] | p | p (Holm) | direction | "
             "bootstrap 95% CI (secondary) |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        d = stats.decimals_for(r[f"{m}_ci_low"], r[f"{m}_ci_high"], fallback=r[f"{m}_sd"])
        mean = stats.format_estimate(r[f"{m}_mean"], decimals=d)
        boot = (stats.format_estimate(None) if r[f"{m}_boot_ci_low"] is None
                else f"[{r[f'{m}_boot_ci_low']:.{d}f}, {r[f'{m}_boot_ci_high']:.{d}f}]")
        lines.append(f"| {r['setting']} | {r['seeds']} | {mean} | {_delta_cell(r, m, summary)} | {_p(r[f'{m}_p'])} "
                     f"| {_p(r[f'{m}_p_holm'])} | {r[f'{m}_direction'] or '—'} | {boot} |")
    return lines


def _gain(row: dict, m: str, summary: dict) -> str:
    if f"{m}_delta" not in row or row[f"{m}_delta"] is None:
        return "—"
    return f"{_delta_cell(row, m, summary)} ({row[f'{m}_direction']})"


def markdown_report(summary: dict) -> str:
    """results.md: how to read it, the primary metric, optimised vs judged gain, then every metric."""
    primary, metrics = summary["primary"], summary["metrics"]
    out = [f"# {summary['name']}", "",
           f"{summary['images']} held-out images; seeds {summary['seeds']}. Each row is a setting (all seeds). "
           "**Δ** is the mean over seeds of each seed's paired mean difference to the baseline trained with the "
           "same seed, on the same images; the interval is the 95% t-interval over seeds; p is the one-sample "
           "t-test of the per-seed deltas; p (Holm) is adjusted over the settings. `*`: Holm p < 0.05 and the "
           "interval excludes 0; **bold**: starred and better than the baseline. Digits follow the interval. "
           "Metrics marked [optimised] were seen by a loss term (they can rise without quality rising); "
           "[judge] metrics were seen by none.", ""]
    if summary["statement"]:
        out += [f"> **{summary['statement']}**", ""]
    flagged = sorted({n for n in summary["notes"].values() if "RANDOM" in n or "MEANINGLESS" in n})
    if flagged:
        which = ", ".join(m for m in metrics if any(f in summary["notes"].get(m, "") for f in flagged))
        out += [f"> **{' / '.join(flagged)}**: {which} — these numbers test the wiring only and mean nothing.", ""]
    out += [f"## Primary metric: {metric_label(summary, primary)}", "", *_metric_table(summary, primary), ""]
    tested = [r for r in summary["rows"] if r["metric"] != "-"]
    if tested:
        out += ["## Optimised gain beside judged gain", "",
                f"| setting | optimised: swept term's own metric | judge: {primary} |", "|---|---|---|"]
        for r in tested:
            out.append(f"| {r['setting']} | {r['metric']}: {_gain(r, r['metric'], summary)} | "
                       f"{_gain(r, primary, summary)} |")
        out.append("")
    out += ["## Every metric (secondary; Holm within each metric)", ""]
    for m in metrics:
        if m != primary:
            out += [f"### {metric_label(summary, m)}", "", *_metric_table(summary, m), ""]
    return "\n".join(out)


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and not math.isfinite(r[k]))
                             else f"{r[k]:.10g}" if isinstance(r.get(k), float) else r.get(k)) for k in columns})
    return buffer.getvalue()


def write_report(run_dir: str | os.PathLike, sources: list[str | os.PathLike] = (), *,
                 require_complete: bool = True) -> Path:
    """Write results.{json,csv,md}, results_per_seed.csv, plots/ and samples.png into ``run_dir`` -> results.md.

    ``sources``: more run folders (shards run without a shared file system) merged with ``run_dir``.
    """
    run_dir = Path(run_dir)
    folders = [run_dir, *map(Path, sources)]
    config, records = collect(folders)
    summary = summarize(config, records, require_complete=require_complete)
    metrics = summary["metrics"]
    columns = ["setting", "metric", "weight", "schedule", "seeds"] + [f"{m}_{k}" for m in metrics for k in ROW_FIELDS]
    write_atomic(run_dir / "results.csv", _csv(summary["rows"], columns))
    seed_columns = ["setting", "id", "seed"] + [c for m in metrics for c in (m, f"{m}_delta")]
    write_atomic(run_dir / "results_per_seed.csv", _csv(summary["per_seed"], seed_columns))
    write_atomic(run_dir / "results.json", dumps({**summary, "config": config}, indent=2))
    write_atomic(run_dir / "results.md", markdown_report(summary))
    if config["evaluation"].get("plots", True):
        plots(summary, run_dir / "plots")
        sample_grid(folders, summary, run_dir / "samples.png")
    return run_dir / "results.md"
