"""report.json (the contract in DESIGN.md) and report.md, written after every run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from instageo.files import write_bytes_atomic, write_json_atomic
from instageo.runner.execute import StageRecord
from instageo.runner.plan import Plan
from instageo.runner.stage import Stage


def build_report(plan: Plan, records: list[StageRecord], run_dir: Path, status: str,
                 error: str | None = None, failure: dict[str, Any] | None = None) -> dict[str, Any]:
    """``failure``: {stage, variants, error, log} of the stage a failed or interrupted run
    stopped in (``records`` are the stages that finished before it)."""
    variants = {
        v.name: {"name": v.name, "sweep": v.params, "student_depth": v.recipe.student.depth, "seed": v.recipe.seed}
        for v in plan.variants
    }
    teachers: dict[Any, dict[str, Any]] = {}  # seed -> what its teacher stages report
    task = plan.variants[0].recipe.task
    source = plan.variants[0].recipe.data.source
    report: dict[str, Any] = {"recipe": plan.recipe_name, "status": status, "stages": [],
                              "task": {"kind": task.kind, "classes": list(task.classes)},
                              "source": {k: str(v) if isinstance(v, Path) else v for k, v in
                                         source.model_dump(include={"kind", "path", "url", "collections"}).items()}}
    if error:
        report["error"] = error
    if failure:
        report["failure"] = failure
    for record in records:
        planned, result = record.decision.planned, record.result
        report["stages"].append({
            "name": planned.name,
            "variants": planned.variants,
            "key": planned.key,
            "cached": record.decision.cached,
            "reason": record.decision.reason,
            "seconds": round(record.seconds, 3),
            "outputs": {name: os.path.relpath(result.path(name), run_dir) for name in result.files},
        })
        section = planned.stage.report_into
        summary = _resolve_files(result.summary, result, run_dir)
        if section == "dataset":
            _merge(report.setdefault(section, {}), summary)
        elif section == "teacher":
            seed = variants[planned.variants[0]]["seed"]
            _merge(teachers.setdefault(seed, {"seed": seed}), summary)
        elif section == "variant":
            for name in planned.variants:
                _merge(variants[name], summary)
        elif section == "run":
            _merge(report, summary)
    if teachers:
        from instageo.runner.sweep import across_seeds

        per_seed = list(teachers.values())
        report["teacher"] = per_seed[0] if len(per_seed) == 1 else across_seeds(per_seed)
    report["variants"] = list(variants.values())
    _throughputs(report)
    _headline(report)
    report["warnings"] = warnings(report)
    return report


EXCLUDED_WARNING = 0.25  # of the non-test chips: a gap that costs more than this is said


def warnings(report: dict[str, Any]) -> list[str]:
    """What a reader must know before believing the tables, one sentence each: a baseline
    that beats the teacher (on val, where it changes what is chosen; on test, where it is
    only reported) and a split whose gap threw away much of the training data."""
    from instageo.runner.sweep import baseline_above_teacher

    found = []
    for key, sentence in (("val_metrics", "A baseline beats the teacher on val: {name} {value:.4f} vs the teacher's "
                                          "{own:.4f} mIoU, so the students are compared with a teacher that a "
                                          "baseline beats."),
                          ("metrics", "On test, {name} scores {value:.4f} against the teacher's {own:.4f} mIoU "
                                      "(test is reported, never used to choose).")):
        above = baseline_above_teacher(report, key)
        if above is not None:
            found.append(sentence.format(name=above[0], value=above[1], own=above[2]))
    splits = report.get("dataset", {}).get("splits") or {}
    excluded = splits.get("excluded", 0)
    kept = excluded + splits.get("train", 0) + splits.get("val", 0)
    if kept and excluded > EXCLUDED_WARNING * kept:
        found.append(f"The split's gap excluded {excluded} of {kept} chips outside test ({100 * excluded / kept:.0f}%): "
                     "lower data.split.gap_km (or raise block_km) to train on them.")
    return found


def _throughputs(report: dict[str, Any]) -> None:
    """DESIGN.md's `throughput` sections (chips/s, medians), filled from the `speed` stage's
    one side-by-side measurement, so they always agree with the table and the plot."""
    measured = report.get("speed", {}).get("variants", {})
    for variant in report["variants"]:
        entry = measured.get(variant["name"])
        if entry:
            variant["throughput"] = {f"{runtime}_img_s": entry[key]["median"]
                                     for runtime, key in (("torch", "torch"), ("onnx", "onnx"), ("onnx_int8", "int8"))
                                     if key in entry}
    first = next(iter(measured.values()), None)
    if first and "teacher" in report:
        report["teacher"]["throughput"] = {f"{runtime}_img_s": first[f"teacher_{runtime}"]["median"]
                                           for runtime in ("torch", "onnx") if f"teacher_{runtime}" in first}


def _headline(report: dict[str, Any]) -> None:
    """Top-level paths (prediction, ...) from the variant the sweep recommends (chosen on val,
    see runner.sweep), else the first variant that has them."""
    from instageo.runner.sweep import recommended, sweep_rows

    best = recommended(sweep_rows(report)) if "teacher" in report else None
    ordered = sorted(report["variants"], key=lambda v: v.get("student_depth") != (best or {}).get("depth"))
    for key in ("prediction", "confidence", "viewer"):
        chosen = next((v[key] for v in ordered if key in v), None)
        if chosen is not None:
            report[key] = chosen


def _resolve_files(summary: dict[str, Any], result, run_dir: Path) -> dict[str, Any]:
    """A summary value "@name" stands for the stage's output file "name": report.json gives
    it as a path relative to the run folder (the contract)."""
    def resolve(value):
        if isinstance(value, str) and value.startswith("@") and value[1:] in result.files:
            return os.path.relpath(result.path(value[1:]), run_dir)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return resolve(summary)


def _merge(target: dict[str, Any], summary: dict[str, Any]) -> None:
    """Merge a stage summary into a report section; nested dicts (e.g. throughput) combine."""
    for key, value in summary.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _link_viewer(run_dir: Path, folder: Path) -> None:
    """runs/<recipe>/viewer -> the recommended variant's viewer folder (a relative symlink,
    swapped atomically), so the map is always at runs/<recipe>/viewer/index.html."""
    link = run_dir / "viewer"
    if link.exists() and not link.is_symlink():
        return  # never replace a real folder someone put there
    tmp = run_dir / f".viewer-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(folder, tmp)
    os.replace(tmp, link)


def write_report(report: dict[str, Any], run_dir: Path, pipeline: Sequence[Stage] = ()) -> None:
    """report.json and report.md, with what the pipeline's stages add (``Stage.report_files``
    and ``Stage.report_markdown``)."""
    from instageo.runner.sweep import sweep_plot

    plot = "sweep.png" if sweep_plot(report, run_dir / "sweep.png") else None
    if report.get("viewer"):
        _link_viewer(run_dir, Path(report["viewer"]).parent)
    for write_files in _hooks(pipeline, "report_files"):
        report.update(write_files(report, run_dir))
    write_json_atomic(run_dir / "report.json", report)
    markdown = render_markdown(report, plot, _hooks(pipeline, "report_markdown"))
    write_bytes_atomic(run_dir / "report.md", markdown.encode("utf-8"))


def _hooks(pipeline: Sequence[Stage], kind: str) -> list:
    """The stages' hooks of one kind, each once (a teacher's and a student's stage may share one)."""
    found: dict[str, Any] = {}
    for stage in pipeline:
        hook = getattr(stage, kind)
        if hook is not None:
            found.setdefault(getattr(hook, "__qualname__", repr(hook)), hook)
    return list(found.values())


def render_markdown(report: dict[str, Any], plot: str | None = None,
                    sections: Sequence[Callable[[dict[str, Any]], list[str]]] = ()) -> str:
    from instageo.runner.sweep import sweep_markdown

    lines = [f"# {report['recipe']}: {report['status']}", ""]
    failure = report.get("failure")
    if failure and failure.get("stage"):
        lines += [f"Stopped in stage **{failure['stage']}** ({', '.join(failure['variants'])}): {failure['error']}",
                  "", f"Traceback: {failure['log']}; the stages below finished and stay cached.", ""]
    elif report.get("error"):
        lines += [f"Error: {report['error']}", ""]
    said = warnings(report)
    lines += [f"**Warning:** {w}" for w in said] + ([""] if said else [])
    splits = report.get("dataset", {}).get("splits")
    if splits:
        lines += ["Chips per split: " + ", ".join(f"{name} {count}" for name, count in splits.items()) + ".", ""]
    lines += ["| stage | variants | key | cached | seconds | reason |", "|---|---|---|---|---|---|"]
    for stage in report["stages"]:
        lines.append(
            f"| {stage['name']} | {', '.join(stage['variants'])} | {stage['key'][:12]} | "
            f"{'yes' if stage['cached'] else 'no'} | {stage['seconds']:.1f} | {stage['reason']} |"
        )
    lines += sweep_markdown(report, plot)
    from instageo.runner.cost import cost_markdown

    lines += cost_markdown(report)
    for section in sections:
        lines += section(report)
    return "\n".join(lines) + "\n"
