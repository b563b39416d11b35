"""The student sweep in report.md: a table against the teacher, a plot against depth, and the
recommended student.

Students are compared with the teacher on the **val** split, the one that chose their best
epochs; test metrics are reported beside them and never used to choose. With several seeds
(``seed: [0, 1, 2]``) every number is a mean over seeds with its spread (sample standard
deviation), and each student is compared with the teacher of its own seed (paired).
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path
from typing import Any

from instageo.files import canonical_json, write_bytes_atomic

WITHIN_PP = 1.0  # a student "keeps accuracy" within 1 percentage point of the teacher's val mIoU


def across_seeds(teachers: list[dict[str, Any]]) -> dict[str, Any]:
    """One teacher section from a teacher per seed: mean metrics, their spread, and each seed's."""
    first = teachers[0]
    merged = {key: value for key, value in first.items() if key not in ("metrics", "val_metrics", "history",
                                                                       "best_epoch", "seed")}
    for key in ("metrics", "val_metrics"):
        if all(key in t for t in teachers):
            merged[key] = _mean_metrics([t[key] for t in teachers])
            merged[f"{key}_spread"] = _spread_metrics([t[key] for t in teachers])
    merged["seeds"] = [{k: t[k] for k in ("seed", "metrics", "val_metrics", "best_epoch") if k in t} for t in teachers]
    return merged


def _mean_metrics(items: list[dict]) -> dict:
    return {k: round(statistics.mean(m[k] for m in items), 6) for k, v in items[0].items() if _is_number(v)}


def _spread_metrics(items: list[dict]) -> dict:
    return {k: round(statistics.stdev(m[k] for m in items), 6) for k, v in items[0].items() if _is_number(v)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _teacher_of(report: dict[str, Any], seed) -> dict[str, Any]:
    teacher = report.get("teacher", {})
    return next((t for t in teacher.get("seeds", []) if t.get("seed") == seed), teacher)


def _miou(section: dict[str, Any], key: str) -> float | None:
    return section.get(key, {}).get("miou")


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.mean(values), 6), (round(statistics.stdev(values), 6) if len(values) > 1 else None)


def sweep_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per student (its variants over seeds pooled): val and test mIoU, their change
    against each seed's teacher in percentage points, and the spread of each over seeds."""
    groups: dict[str, list[dict]] = {}
    for variant in report.get("variants", []):
        if "metrics" not in variant or "miou" not in variant["metrics"]:
            continue
        others = {k: v for k, v in variant.get("sweep", {}).items() if k != "seed"}
        groups.setdefault(canonical_json([variant["student_depth"], others]), []).append(variant)
    speeds = report.get("speed", {}).get("variants", {})
    floor = baseline_floor(report)
    teacher_beaten = baseline_above_teacher(report, "val_metrics") is not None
    rows = []
    for variants in sorted(groups.values(), key=lambda vs: vs[0]["student_depth"]):
        row = {"depth": variants[0]["student_depth"], "params": variants[0]["params"],
               "gflops": variants[0]["gflops"], "seeds": len(variants)}
        for split, key in (("val", "val_metrics"), ("test", "metrics")):
            mine = [_miou(v, key) for v in variants]
            theirs = [_miou(_teacher_of(report, v.get("seed")), key) for v in variants]
            row[f"{split}_miou"], row[f"{split}_spread"] = _mean_spread([m for m in mine if m is not None])
            paired = [100 * (m - t) for m, t in zip(mine, theirs) if m is not None and t is not None]
            row[f"{split}_delta_pp"], row[f"{split}_delta_spread"] = _mean_spread(paired)
        row.update(_speed_of([speeds.get(v["name"]) for v in variants]))
        row["below_baseline"] = floor is not None and row["val_miou"] is not None and row["val_miou"] <= floor[1]
        row["teacher_below_baseline"] = teacher_beaten
        rows.append(row)
    return rows


def baseline_floor(report: dict[str, Any]) -> tuple[str, float] | None:
    """The best baseline on val (name, mIoU): a model at or below it has learnt nothing a
    threshold or the majority class does not know."""
    return best_baseline(report, "val_metrics")


def baseline_above_teacher(report: dict[str, Any], key: str) -> tuple[str, float, float] | None:
    """(name, its mIoU, the teacher's) when the best baseline in ``key`` (val_metrics or
    metrics) scores at least the teacher's mIoU there, else None."""
    best, own = best_baseline(report, key), _miou(report.get("teacher", {}), key)
    return (*best, own) if best is not None and own is not None and best[1] >= own else None


def best_baseline(report: dict[str, Any], key: str) -> tuple[str, float] | None:
    """The baseline with the highest mIoU in ``key`` (val_metrics or metrics): (name, mIoU)."""
    scored = [(name, b[key]["miou"]) for name, b in report.get("teacher", {}).get("baselines", {}).items()
              if "miou" in b.get(key, {})]
    return max(scored, key=lambda item: item[1]) if scored else None


def _speed_of(measured: list[dict | None]) -> dict[str, Any]:
    """A row's speeds, all from the `speed` stage's one side-by-side measurement (its first
    variant's: speed depends on the architecture, the same for every seed)."""
    entry = next((m for m in measured if m), None)
    if entry is None:
        return {"img_s": None, "teacher_img_s": None, "onnx_img_s": None, "teacher_onnx_img_s": None,
                "speedup": None, "speedup_range": None,
                "onnx_speedup": None, "onnx_speedup_range": None, "same_as_teacher": False}
    return {"img_s": entry["torch"]["median"], "img_s_range": (entry["torch"]["min"], entry["torch"]["max"]),
            "teacher_img_s": entry.get("teacher_torch", {}).get("median"),
            "onnx_img_s": entry.get("onnx", {}).get("median"),
            "teacher_onnx_img_s": entry.get("teacher_onnx", {}).get("median"),
            "speedup": entry.get("speedup_torch"), "speedup_range": _ratio_range(entry, "torch"),
            "onnx_speedup": entry.get("speedup_onnx"), "onnx_speedup_range": _ratio_range(entry, "onnx"),
            "same_as_teacher": entry["same_as_teacher"]}


def _ratio_range(entry: dict, runtime: str) -> tuple[float, float] | None:
    """The slowest student round against the fastest teacher round, and the reverse."""
    mine, theirs = entry.get(runtime), entry.get(f"teacher_{runtime}")
    if not mine or not theirs:
        return None
    return round(mine["min"] / theirs["max"], 3), round(mine["max"] / theirs["min"], 3)


def tolerance_pp(row: dict[str, Any]) -> float:
    """How far below the teacher (val, pp) a student may be and still keep its accuracy: 1 pp,
    or the seed-to-seed spread of the difference when that is larger (a smaller loss cannot be
    told from noise)."""
    return max(WITHIN_PP, row.get("val_delta_spread") or 0.0)


def recommended(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest student whose val mIoU is within ``tolerance_pp`` of the teacher's and
    above the best baseline's (when a baseline beats the teacher, report.md says the choice
    is made against that teacher)."""
    keeping = [r for r in rows if r["val_delta_pp"] is not None and r["val_delta_pp"] >= -tolerance_pp(r)
               and not r.get("below_baseline")]
    return min(keeping, key=lambda r: r["params"]) if keeping else None


def sweep_markdown(report: dict[str, Any], plot: str | None) -> list[str]:
    rows = sweep_rows(report)
    if not rows:
        return []
    teacher = report["teacher"]
    seeds = max(r["seeds"] for r in rows)
    note = f" (mean ± spread over {seeds} seeds)" if seeds > 1 else ""
    timed = next((r for r in rows if r["teacher_img_s"] is not None), None)
    lines = ["", "## Students", "",
             f"Chosen on val mIoU, reported on test mIoU{note}; changes are against the teacher of the same seed.", "",
             "| depth | params | GFLOPs/chip | val mIoU | vs teacher (val, pp) | test mIoU | vs teacher (test, pp) "
             "| chips/s (ONNX) | speed-up (ONNX) | FLOPs promise | chips/s (PyTorch) | speed-up (PyTorch) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| teacher ({teacher.get('depth', '?')}){' (below baseline)' if rows[0]['teacher_below_baseline'] else ''} "
             f"| {teacher['params']:,} | {teacher['gflops']:.4f} | "
             f"{_with_spread(_miou(teacher, 'val_metrics'), teacher.get('val_metrics_spread', {}).get('miou'))} | 0 | "
             f"{_with_spread(_miou(teacher, 'metrics'), teacher.get('metrics_spread', {}).get('miou'))} | 0 | "
             f"{_number(timed and timed['teacher_onnx_img_s'], '.1f')} | 1.00x | 1.00x | "
             f"{_number(timed and timed['teacher_img_s'], '.1f')} | 1.00x |"]
    for row in rows:
        depth = f"{row['depth']} (= teacher)" if row["same_as_teacher"] else str(row["depth"])
        depth += " (below baseline)" if row["below_baseline"] else ""
        lines.append(
            f"| {depth} | {row['params']:,} | {row['gflops']:.4f} | {_with_spread(row['val_miou'], row['val_spread'])} | "
            f"{_with_spread(row['val_delta_pp'], row['val_delta_spread'], '+.2f')} | "
            f"{_with_spread(row['test_miou'], row['test_spread'])} | "
            f"{_with_spread(row['test_delta_pp'], row['test_delta_spread'], '+.2f')} | "
            f"{_number(row['onnx_img_s'], '.1f')} | {_speedup(row, 'onnx_')} | {teacher['gflops'] / row['gflops']:.2f}x | "
            f"{_number(row['img_s'], '.1f')} | {_speedup(row)} |")
    speed = report.get("speed")
    if speed:
        lines += ["", f"Speeds: every model timed in one process (CPU, {speed['threads']} threads) on the same "
                  f"{speed['batch']} test chips, in alternation over {speed['rounds']} rounds; median, and in "
                  "brackets the range from the slowest to the fastest round; ONNX Runtime is what the bundle "
                  "deploys. FLOPs promise: the teacher's GFLOPs over the student's. A student of the teacher's depth "
                  "has its architecture: its speed-up is noise."]
    else:
        lines += ["", "Speeds: not measured in this run (the `speed` stage did not run)."]
    best = recommended(rows)
    lines.append("")
    if rows[0]["teacher_below_baseline"]:
        name, value = baseline_floor(report)
        lines.append(f"**The teacher does not beat the {name} baseline** (val mIoU {_miou(teacher, 'val_metrics'):.4f} "
                     f"vs {value:.4f}): what follows compares students with a teacher that a baseline beats; "
                     "check the labels, the bands and the training.")
    if best:
        lines.append(f"Smallest student within {tolerance_pp(best):.2g} pp of the teacher and above every baseline, "
                     f"both on val mIoU: **depth {best['depth']}** ({best['params']:,} parameters, {_speedup(best, 'onnx_')} "
                     f"the teacher's chips/s in ONNX Runtime, {_speedup(best)} in PyTorch).")
    elif rows[0]["teacher_below_baseline"]:
        lines.append("So no student is recommended.")
    elif all(r["val_delta_pp"] is None for r in rows):
        lines.append("No val split, so no student is recommended (test metrics are never used to choose).")
    else:
        lines.append(f"No student is within {WITHIN_PP:g} pp (or the seed spread) of the teacher's val mIoU.")
    if seeds == 1:
        lines.append("One seed: differences of a few pp may be noise; `seed: [0, 1, 2]` measures the spread.")
    if plot:
        lines += ["", f"![mIoU and speed-up against depth]({plot})"]
    return lines + baselines_markdown(report)


def baselines_markdown(report: dict[str, Any]) -> list[str]:
    """The baselines beside the teacher, and the teacher's confusion matrix and class IoUs."""
    teacher = report.get("teacher", {})
    found = teacher.get("baselines", {})
    if not found:
        return []
    lines = ["", "## Baselines", "", "On the same val and test pixels as the models; fit on the train split.", "",
             "| model | val mIoU | test mIoU | how |", "|---|---|---|---|",
             f"| teacher | {_number(_miou(teacher, 'val_metrics'), '.4f')} | {_number(_miou(teacher, 'metrics'), '.4f')} "
             "| trained |"]
    for name, baseline in found.items():
        lines.append(f"| {name} | {_number(_miou(baseline, 'val_metrics'), '.4f')} | "
                     f"{_number(_miou(baseline, 'metrics'), '.4f')} | {baseline['method']} |")
    models = [("Teacher", teacher)] + [(f"Student depth {v['student_depth']} ({v['name']})", v)
                                        for v in report.get("variants", []) if "metrics" in v]
    for title, model in models:
        lines += _confusion_markdown(title, model, report.get("task", {}).get("classes"))
    return lines


def _confusion_markdown(title: str, model: dict[str, Any], classes: list[str] | None) -> list[str]:
    metrics = model.get("metrics", {})
    confusion = metrics.get("confusion")
    if not confusion:
        return []
    classes = classes or [str(i) for i in range(len(confusion))]
    lines = ["", f"{title} on the {model.get('metrics_split', 'test')} split: {metrics.get('chips', '?')} chips, "
             f"{metrics['pixels']:,} labelled pixels; rows true, columns predicted.", "",
             "| true \\ predicted | " + " | ".join(classes) + " | IoU |", "|---" * (len(classes) + 2) + "|"]
    for name, row, iou in zip(classes, confusion, metrics["iou"]):
        lines.append(f"| {name} | " + " | ".join(f"{v:,}" for v in row) + f" | {iou:.4f} |")
    return lines


def _with_spread(value, spread, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    return format(value, spec) + (f" ± {format(spread, spec.lstrip('+'))}" if spread is not None else "")


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _speedup(row: dict[str, Any], runtime: str = "") -> str:
    """'2.50x [1.80-3.33]': the median speed-up and its range over the rounds."""
    if row[f"{runtime}speedup"] is None:
        return "-"
    low, high = row[f"{runtime}speedup_range"] or (None, None)
    return f"{row[f'{runtime}speedup']:.2f}x" + (f" [{low:.2f}-{high:.2f}]" if low is not None else "")


def sweep_plot(report: dict[str, Any], path: Path) -> bool:
    """mIoU (left) and speed-up (right) against student depth; False when there is no sweep."""
    rows = sweep_rows(report)
    if not rows:
        return False
    # drawing needs matplotlib (~2 s to import): redraw only when what it shows has changed
    drawn = path.with_name(f".{path.name}.sha256")
    digest = hashlib.sha256(canonical_json([rows, report["teacher"].get("metrics")]).encode()).hexdigest()
    if path.exists() and drawn.exists() and drawn.read_text() == digest:
        return True
    _draw(rows, report, path)
    write_bytes_atomic(drawn, digest.encode())
    return True


def _draw(rows: list[dict], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    depths = [r["depth"] for r in rows]
    figure, left = plt.subplots(figsize=(6, 3.6), dpi=110)
    left.errorbar(depths, [r["test_miou"] for r in rows], yerr=[r["test_spread"] or 0 for r in rows],
                  fmt="o-", color="#2166ac", capsize=3, label="student mIoU (test)")
    left.axhline(report["teacher"]["metrics"]["miou"], color="#2166ac", linestyle="--", label="teacher mIoU (test)")
    left.set_xlabel("student depth (encoder blocks kept)")
    left.set_ylabel("mIoU (test)", color="#2166ac")
    left.set_xticks(depths)
    right = left.twinx()
    speedups = [r["speedup"] or float("nan") for r in rows]
    ranges = [r["speedup_range"] or (s, s) for r, s in zip(rows, speedups)]
    right.errorbar(depths, speedups, yerr=[[s - low for s, (low, _) in zip(speedups, ranges)],
                                          [high - s for s, (_, high) in zip(speedups, ranges)]],
                   fmt="s-", color="#d95f02", capsize=3, label="speed-up (PyTorch; bars: slowest-fastest round)")
    right.set_ylim(bottom=0)  # from zero: a 1.3-1.4 axis made noise look like a trend
    right.set_ylabel("speed-up vs teacher (chips/s)", color="#d95f02")
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(lines, [h.get_label() for h in lines], loc="lower right", fontsize=8)
    left.set_title(f"{report['recipe']}: students distilled from the teacher")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
