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
                                                                       "best_epoch", "seed", "throughput")}
    for key in ("metrics", "val_metrics"):
        if all(key in t for t in teachers):
            merged[key] = _mean_metrics([t[key] for t in teachers])
            merged[f"{key}_spread"] = _spread_metrics([t[key] for t in teachers])
    merged["throughput"] = {"torch_img_s": round(statistics.mean(t["throughput"]["torch_img_s"] for t in teachers), 2)}
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
        speeds = [v.get("throughput", {}) for v in variants]
        row["img_s"] = _mean_spread([s["torch_img_s"] for s in speeds if s.get("torch_img_s")])[0]
        row["speedup"] = _mean_spread([s["speedup"] for s in speeds if s.get("speedup")])[0]
        rows.append(row)
    return rows


def tolerance_pp(row: dict[str, Any]) -> float:
    """How far below the teacher (val, pp) a student may be and still keep its accuracy: 1 pp,
    or the seed-to-seed spread of the difference when that is larger (a smaller loss cannot be
    told from noise)."""
    return max(WITHIN_PP, row.get("val_delta_spread") or 0.0)


def recommended(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest student whose val mIoU is within ``tolerance_pp`` of the teacher's."""
    keeping = [r for r in rows if r["val_delta_pp"] is not None and r["val_delta_pp"] >= -tolerance_pp(r)]
    return min(keeping, key=lambda r: r["params"]) if keeping else None


def sweep_markdown(report: dict[str, Any], plot: str | None) -> list[str]:
    rows = sweep_rows(report)
    if not rows:
        return []
    teacher = report["teacher"]
    seeds = max(r["seeds"] for r in rows)
    note = f" (mean ± spread over {seeds} seeds)" if seeds > 1 else ""
    lines = ["", "## Students", "",
             f"Chosen on val mIoU, reported on test mIoU{note}; changes are against the teacher of the same seed.", "",
             "| depth | params | GFLOPs/chip | val mIoU | vs teacher (val, pp) | test mIoU | vs teacher (test, pp) "
             "| chips/s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| teacher ({teacher.get('depth', '?')}) | {teacher['params']:,} | {teacher['gflops']:.4f} | "
             f"{_with_spread(_miou(teacher, 'val_metrics'), teacher.get('val_metrics_spread', {}).get('miou'))} | 0 | "
             f"{_with_spread(_miou(teacher, 'metrics'), teacher.get('metrics_spread', {}).get('miou'))} | 0 | "
             f"{teacher['throughput']['torch_img_s']:.1f} | 1.00x |"]
    # speed-ups are measured by each student stage, timing student and teacher in alternation
    for row in rows:
        lines.append(
            f"| {row['depth']} | {row['params']:,} | {row['gflops']:.4f} | {_with_spread(row['val_miou'], row['val_spread'])} | "
            f"{_with_spread(row['val_delta_pp'], row['val_delta_spread'], '+.2f')} | "
            f"{_with_spread(row['test_miou'], row['test_spread'])} | "
            f"{_with_spread(row['test_delta_pp'], row['test_delta_spread'], '+.2f')} | "
            f"{_number(row['img_s'], '.1f')} | {_number(row['speedup'], '.2f')}x |")
    best = recommended(rows)
    lines.append("")
    if best:
        lines.append(f"Smallest student within {tolerance_pp(best):.2g} pp val mIoU of the teacher: **depth "
                     f"{best['depth']}** ({best['params']:,} parameters, {_number(best['speedup'], '.2f')}x the "
                     "teacher's chips/s).")
    elif all(r["val_delta_pp"] is None for r in rows):
        lines.append("No val split, so no student is recommended (test metrics are never used to choose).")
    else:
        lines.append(f"No student is within {WITHIN_PP:g} pp (or the seed spread) of the teacher's val mIoU.")
    if seeds == 1:
        lines.append("One seed: differences of a few pp may be noise; `seed: [0, 1, 2]` measures the spread.")
    if plot:
        lines += ["", f"![mIoU and speed-up against depth]({plot})"]
    return lines


def _with_spread(value, spread, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    return format(value, spec) + (f" ± {format(spread, spec.lstrip('+'))}" if spread is not None else "")


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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
    right.plot(depths, [r["speedup"] or float("nan") for r in rows], "s-", color="#d95f02", label="speed-up")
    right.set_ylabel("speed-up vs teacher (chips/s)", color="#d95f02")
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(lines, [h.get_label() for h in lines], loc="lower right", fontsize=8)
    left.set_title(f"{report['recipe']}: students distilled from the teacher")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
