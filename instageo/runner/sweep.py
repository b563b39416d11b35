"""The student sweep in report.md: a table against the teacher and a plot against depth."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from instageo.files import canonical_json, write_bytes_atomic

WITHIN_PP = 1.0  # a student "keeps accuracy" within 1 percentage point of the teacher's mIoU


def sweep_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    teacher = report.get("teacher", {})
    base_miou = teacher.get("metrics", {}).get("miou")
    rows = []
    for variant in sorted(report.get("variants", []), key=lambda v: v.get("student_depth", 0)):
        if "metrics" not in variant or "miou" not in variant["metrics"]:
            continue
        speed = variant.get("throughput", {})
        rows.append({
            "depth": variant["student_depth"], "params": variant["params"], "gflops": variant["gflops"],
            "miou": variant["metrics"]["miou"],
            "delta_pp": None if base_miou is None else round(100 * (variant["metrics"]["miou"] - base_miou), 2),
            "img_s": speed.get("torch_img_s"), "speedup": speed.get("speedup"),
        })
    return rows


def smallest_within(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    keeping = [r for r in rows if r["delta_pp"] is not None and r["delta_pp"] >= -WITHIN_PP]
    return min(keeping, key=lambda r: r["params"]) if keeping else None


def sweep_markdown(report: dict[str, Any], plot: str | None) -> list[str]:
    rows = sweep_rows(report)
    if not rows:
        return []
    teacher = report["teacher"]
    lines = ["", "## Students", "",
             "| depth | params | GFLOPs/chip | mIoU | vs teacher (pp) | chips/s | speed-up |",
             "|---|---|---|---|---|---|---|",
             f"| teacher ({teacher.get('depth', '?')}) | {teacher['params']:,} | {teacher['gflops']:.4f} | "
             f"{teacher['metrics']['miou']:.4f} | 0 | {teacher['throughput']['torch_img_s']:.1f} | 1.00x |"]
    # speed-ups are measured by each student stage, timing student and teacher in alternation
    for row in rows:
        lines.append(f"| {row['depth']} | {row['params']:,} | {row['gflops']:.4f} | {row['miou']:.4f} | "
                     f"{_number(row['delta_pp'], '+.2f')} | {_number(row['img_s'], '.1f')} | "
                     f"{_number(row['speedup'], '.2f')}x |")
    best = smallest_within(rows)
    lines.append("")
    lines.append(f"Smallest student within {WITHIN_PP:g} pp mIoU of the teacher: **depth {best['depth']}** "
                 f"({best['params']:,} parameters, {_number(best['speedup'], '.2f')}x the teacher's chips/s)."
                 if best else f"No student is within {WITHIN_PP:g} pp mIoU of the teacher.")
    if plot:
        lines += ["", f"![mIoU and speed-up against depth]({plot})"]
    return lines


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def sweep_plot(report: dict[str, Any], path: Path) -> bool:
    """mIoU (left) and speed-up (right) against student depth; False when there is no sweep."""
    rows = sweep_rows(report)
    if not rows:
        return False
    # drawing needs matplotlib (~2 s to import): redraw only when what it shows has changed
    drawn = path.with_name(f".{path.name}.sha256")
    digest = hashlib.sha256(canonical_json([rows, report["teacher"]["metrics"].get("miou")]).encode()).hexdigest()
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
    left.plot(depths, [r["miou"] for r in rows], "o-", color="#2166ac", label="student mIoU")
    left.axhline(report["teacher"]["metrics"]["miou"], color="#2166ac", linestyle="--", label="teacher mIoU")
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
