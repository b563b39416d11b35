"""report.md's section on the int8 models the export stage writes (plain data in, lines out:
a cached rerun renders it without importing the export stage's torch)."""

from __future__ import annotations


def int8_markdown(report: dict) -> list[str]:
    """report.md's table of what int8 cost each student against float32 (val decides which
    model predict runs, test is reported) and the model predict ran."""
    rows = [v for v in report.get("variants", []) if isinstance(v.get("int8"), dict) and v["int8"].get("val")]
    if not rows:
        return []
    metric = rows[0]["int8"]["metric"]
    scale, unit = (100, "pp") if metric == "miou" else (1, "")
    name = {"miou": "mIoU", "rmse": "RMSE"}[metric]

    def cells(check: dict | None) -> str:
        if not check:
            return " | | "
        return f"{check['float32']:.4f} | {check['int8']:.4f} | {scale * check['delta']:+.2f} {unit}"

    lines = ["", "## int8 against float32", "",
             "Each student's ONNX model and its int8 twin (dynamic quantisation, export.onnx.quantize) on the same "
             f"chips; predict runs int8 when it lost at most export.predict.int8_tolerance_pp of val {name}.", "",
             f"| variant | val {name}, float32 | int8 | change | test {name}, float32 | int8 | change | predict ran |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in rows:
        ran = (variant.get("prediction_area") or {}).get("model", "")
        lines.append(f"| {variant['name']} | {cells(variant['int8']['val'])} | {cells(variant['int8'].get('test'))} "
                     f"| {ran} |")
    return lines
