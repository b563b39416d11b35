"""The recommended student is chosen on validation metrics, never on test, and a difference
smaller than the seed-to-seed spread is not taken for a loss."""

from instageo.runner.report import render_markdown
from instageo.runner.sweep import across_seeds, recommended, sweep_rows


def variant(depth, params, val, test, seed=0):
    return {"name": f"d{depth}s{seed}", "student_depth": depth, "seed": seed, "params": params, "gflops": 0.1,
            "sweep": {"student.depth": depth, "seed": seed}, "metrics": {"miou": test}, "val_metrics": {"miou": val},
            "throughput": {"torch_img_s": 100.0, "speedup": 2.0}}


def teacher(val, test, seed=0):
    return {"seed": seed, "depth": 12, "params": 1000, "gflops": 1.0, "metrics": {"miou": test},
            "val_metrics": {"miou": val}, "throughput": {"torch_img_s": 50.0}}


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
