"""The recommended student is chosen on validation metrics, never on test, and a difference
smaller than the seed-to-seed spread is not taken for a loss."""

import pytest

from instageo.runner.report import render_markdown
from instageo.runner.sweep import across_seeds, recommended, sweep_rows


def variant(depth, params, val, test, seed=0):
    return {"name": f"d{depth}s{seed}", "student_depth": depth, "seed": seed, "params": params, "gflops": 0.1,
            "sweep": {"student.depth": depth, "seed": seed}, "metrics": {"miou": test}, "val_metrics": {"miou": val}}


def teacher(val, test, seed=0):
    return {"seed": seed, "depth": 12, "params": 1000, "gflops": 1.0, "metrics": {"miou": test},
            "val_metrics": {"miou": val}}


def report(variants, teachers):
    return {"recipe": "r", "status": "ok", "stages": [], "variants": variants,
            "teacher": teachers[0] if len(teachers) == 1 else across_seeds(teachers)}


def test_the_recommendation_follows_val_where_val_and_test_disagree():
    # on test, depth 2 looks as good as the teacher and depth 4 worse; on val it is the reverse
    crafted = report([variant(2, 100, val=0.60, test=0.80), variant(4, 200, val=0.795, test=0.70)],
                     [teacher(val=0.80, test=0.80)])
    best = recommended(sweep_rows(crafted))
    assert best["depth"] == 4
    text = render_markdown(crafted)
    assert "**depth 4**" in text and "Chosen on val mIoU, reported on test mIoU" in text


def test_no_val_split_means_no_recommendation():
    crafted = report([variant(2, 100, val=None, test=0.80)], [teacher(val=None, test=0.80)])
    for v in crafted["variants"] + [crafted["teacher"]]:
        v.pop("val_metrics")
    assert recommended(sweep_rows(crafted)) is None
    assert "No val split, so no student is recommended" in render_markdown(crafted)


def test_seeds_give_mean_and_spread_and_pair_each_student_with_its_own_teacher():
    teachers = [teacher(0.80, 0.70, seed=0), teacher(0.70, 0.60, seed=1), teacher(0.75, 0.65, seed=2)]
    students = [variant(2, 100, 0.79, 0.69, 0), variant(2, 100, 0.66, 0.56, 1), variant(2, 100, 0.74, 0.64, 2)]
    crafted = report(students, teachers)
    (row,) = sweep_rows(crafted)
    assert row["seeds"] == 3 and abs(row["val_delta_pp"] - (-2.0)) < 1e-6  # -1, -4, -1 pp, paired
    assert abs(row["val_delta_spread"] - 1.732051) < 1e-5
    assert abs(crafted["teacher"]["val_metrics"]["miou"] - 0.75) < 1e-9
    assert abs(crafted["teacher"]["val_metrics_spread"]["miou"] - 0.05) < 1e-9
    # a 2 pp mean loss with a 1.7 pp spread: beyond 1 pp and beyond the spread, not kept
    assert recommended([row]) is None
    # the same loss with a larger spread cannot be told from noise
    noisy = report([variant(2, 100, 0.79, 0.69, 0), variant(2, 100, 0.62, 0.56, 1), variant(2, 100, 0.76, 0.64, 2)],
                   teachers)
    (row,) = sweep_rows(noisy)
    assert row["val_delta_spread"] > -row["val_delta_pp"] and recommended([row])["depth"] == 2
    assert "± " in render_markdown(noisy)


def timing(median, low, high):
    return {"median": median, "min": low, "max": high}


def test_every_chips_per_second_and_speed_up_comes_from_the_one_side_by_side_measurement():
    """The table once showed a student slower than its teacher (15.5 vs 20.9 chips/s) and a
    "2.48x" speed-up: the columns came from different measurements."""
    crafted = report([variant(2, 100, 0.79, 0.7), variant(12, 1000, 0.8, 0.7)], [teacher(0.8, 0.7)])
    teacher_torch, teacher_onnx = timing(20.0, 18.0, 25.0), timing(30.0, 29.0, 31.0)
    crafted["speed"] = {"batch": 16, "rounds": 7, "threads": 2, "device": "cpu", "variants": {
        "d2s0": {"depth": 2, "same_as_teacher": False, "torch": timing(50.0, 45.0, 60.0), "teacher_torch": teacher_torch,
                 "speedup_torch": 2.5, "onnx": timing(90.0, 80.0, 95.0), "teacher_onnx": teacher_onnx,
                 "speedup_onnx": 3.0},
        "d12s0": {"depth": 12, "same_as_teacher": True, "torch": timing(21.0, 19.0, 22.0),
                  "teacher_torch": teacher_torch, "speedup_torch": 1.05},
    }}
    rows = {r["depth"]: r for r in sweep_rows(crafted)}
    assert rows[2]["img_s"] == 50.0 and rows[2]["teacher_img_s"] == 20.0 and rows[2]["speedup"] == 2.5
    assert rows[2]["speedup_range"] == (round(45 / 25, 3), round(60 / 18, 3))
    text = render_markdown(crafted)
    # ONNX Runtime (what the bundle deploys) first, the FLOPs' promise beside it, PyTorch after
    assert "| teacher (12) | 1,000 | 1.0000 | 0.8000 | 0 | 0.7000 | 0 | 30.0 | 1.00x | 1.00x | 20.0 | 1.00x |" in text
    assert "| 90.0 | 3.00x [2.58-3.28] | 10.00x | 50.0 | 2.50x [1.80-3.33] |" in text
    assert "| 12 (= teacher) |" in text and "| - | - | 10.00x | 21.0 | 1.05x [0.76-1.22] |" in text
    assert "same 16 test chips, in alternation over 7 rounds" in text


def test_without_the_speed_stage_no_speed_is_shown():
    text = render_markdown(report([variant(2, 100, 0.79, 0.7)], [teacher(0.8, 0.7)]))
    assert "| - | - | 10.00x | - | - |" in text and "not measured in this run" in text


def baselines(val, test):
    return {"majority": {"method": "class 0 everywhere", "val_metrics": {"miou": 0.3}, "metrics": {"miou": 0.3}},
            "vv_threshold": {"method": "Otsu", "val_metrics": {"miou": val}, "metrics": {"miou": test}}}


def test_a_student_that_does_not_beat_the_best_baseline_is_flagged_and_never_recommended():
    # depth 2 is within 1 pp of the teacher but at Otsu's val mIoU; depth 4 beats Otsu
    crafted = report([variant(2, 100, 0.75, 0.7), variant(4, 200, 0.758, 0.78)], [teacher(0.757, 0.8)])
    assert recommended(sweep_rows(crafted))["depth"] == 2  # with no baselines known
    crafted["teacher"]["baselines"] = baselines(0.75, 0.74)
    rows = {r["depth"]: r for r in sweep_rows(crafted)}
    assert rows[2]["below_baseline"] and not rows[4]["below_baseline"]
    assert recommended(list(rows.values()))["depth"] == 4
    text = render_markdown(crafted)
    assert "| 2 (below baseline) |" in text and "## Baselines" in text and "| vv_threshold | 0.7500 | 0.7400 | Otsu |" in text


def test_when_a_baseline_beats_the_teacher_the_report_says_so_first_and_beside_the_recommendation():
    """Students scoring +37 pp over a broken teacher were once "recommended" with no word of it."""
    crafted = report([variant(2, 100, 0.62, 0.6), variant(4, 200, 0.45, 0.45)], [teacher(0.25, 0.25)])
    crafted["teacher"]["baselines"] = baselines(0.5, 0.5)
    rows = sweep_rows(crafted)
    assert rows[0]["teacher_below_baseline"] and recommended(rows)["depth"] == 2
    text = render_markdown(crafted)
    top = text.split("| stage |")[0]
    assert "A baseline beats the teacher on val: vv_threshold 0.5000 vs the teacher's 0.2500" in top
    assert "teacher (12) (below baseline)" in text
    assert ("**The teacher does not beat the vv_threshold baseline** (val mIoU 0.2500 vs 0.5000): what follows "
            "compares students with a teacher that a baseline beats") in text
    crafted["variants"] = [variant(4, 200, 0.45, 0.45)]  # no student above the baseline either
    assert recommended(sweep_rows(crafted)) is None and "So no student is recommended." in render_markdown(crafted)


def test_a_teacher_above_every_baseline_on_val_but_not_on_test_is_said_at_the_top():
    crafted = report([variant(2, 100, 0.9, 0.8)], [teacher(0.9, 0.8)])
    crafted["teacher"]["baselines"] = baselines(0.85, 0.85)
    top = render_markdown(crafted).split("| stage |")[0]
    assert "A baseline beats the teacher on val" not in top
    assert "On test, vv_threshold scores 0.8500 against the teacher's 0.8000" in top


def test_predict_takes_the_int8_model_only_within_the_tolerance_on_val():
    from instageo.engine.runtime import choose_model

    def bundle(val_delta, metric="miou", test_delta=-0.5):
        return {"model": "model.onnx", "model_int8": "model.int8.onnx",
                "int8": {"metric": metric, "val": None if val_delta is None else
                         {"float32": 0.8, "int8": 0.8 + val_delta, "delta": val_delta},
                         "test": {"float32": 0.8, "int8": 0.3, "delta": test_delta}}}

    assert choose_model(bundle(-0.004), 0.5, gpu=False) == (
        "model.int8.onnx", "int8: val mIoU -0.40 pp, within 0.5 (export.predict.int8_tolerance_pp)")
    assert choose_model(bundle(-0.004), 0.5, gpu=True)[0] == "model.onnx"  # int8 kernels are CPU ones
    assert choose_model(bundle(-0.006), 0.5, gpu=False)[0] == "model.onnx"  # 0.6 pp lost
    assert choose_model(bundle(-0.006), 1.0, gpu=False)[0] == "model.int8.onnx"
    assert choose_model(bundle(0.0, test_delta=-0.5), 0.5, gpu=False)[0] == "model.int8.onnx"  # test never decides
    assert choose_model(bundle(None), 0.5, gpu=False)[1] == "float32: no val split to judge the int8 model on"
    assert choose_model(bundle(-0.001), None, gpu=False)[0] == "model.onnx"
    assert choose_model({"model": "model.onnx"}, 0.5, gpu=False)[0] == "model.onnx"
    assert choose_model(bundle(0.003, "rmse"), 0.5, gpu=False)[0] == "model.int8.onnx"  # 0.375% of 0.8
    assert choose_model(bundle(0.005, "rmse"), 0.5, gpu=False)[0] == "model.onnx"


def test_the_cost_of_mapping_comes_from_the_stage_timing_and_says_its_assumptions():
    """1000 x 1000 px in 10 s on 2 cores at 30 m: 100,000 px/s. The land (148.9 M km² at 30 m:
    1.6544e11 px) takes 1.6544e6 s of wall time = 459.6 h, x 2 cores = 919.1 CPU-hours; a year
    of 73 passes 67,097 CPU-hours, of 122 (HLS) 112,131. On a GPU the same timing is 459.6
    GPU-hours (worked by hand, not by the code under test)."""
    from instageo.runner.cost import cost_markdown, cost_rows

    timed = dict(variant(2, 100, 0.5, 0.5), prediction_area={"width": 1000, "height": 1000, "seconds": 10.0,
                                                            "cores": 2, "resolution_m": 30.0, "model": "model.onnx"})
    untimed = variant(4, 200, 0.5, 0.5)  # no prediction: no row
    rows = cost_rows({"variants": [timed, untimed]})
    assert len(rows) == 1 and rows[0]["pixels_per_s"] == 100_000
    assert rows[0]["area_hours"] == pytest.approx(10 * 2 / 3600) and rows[0]["unit"] == "CPU-hours"
    assert rows[0]["land_hours"] == pytest.approx(919.1, rel=1e-3)
    assert rows[0]["land_per_year_hours_Sentinel-2"] == pytest.approx(67_097, rel=1e-3)
    assert rows[0]["land_per_year_hours_HLS"] == pytest.approx(112_131, rel=1e-3)
    text = "\n".join(cost_markdown({"variants": [timed]}))
    assert "148.9 M km²" in text and "Sentinel-2 73 passes" in text and "| 919 |" in text
    on_gpu = dict(timed, prediction_area={**timed["prediction_area"], "device": "gpu"})
    gpu_row = cost_rows({"variants": [on_gpu]})[0]
    assert gpu_row["unit"] == "GPU-hours" and gpu_row["land_hours"] == pytest.approx(459.6, rel=1e-3)
    assert cost_markdown({"variants": [untimed]}) == []


def test_chips_per_split_are_shown_and_a_gap_excluding_over_a_quarter_warns():
    from instageo.runner.report import warnings

    crafted = report([variant(2, 100, 0.9, 0.8)], [teacher(0.9, 0.8)])
    crafted["dataset"] = {"splits": {"train": 71, "val": 74, "test": 110, "excluded": 114}}  # bench/stability.py, before
    text = render_markdown(crafted)
    assert "Chips per split: train 71, val 74, test 110, excluded 114." in text
    assert ("The split's gap excluded 114 of 259 chips outside test (44%): lower data.split.gap_km (or raise "
            "block_km) to train on them.") in text.split("| stage |")[0]
    crafted["dataset"]["splits"].update(train=150, excluded=60)  # 60 of 284: 21%
    assert warnings(crafted) == []
