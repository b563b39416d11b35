"""The baselines every report shows, checked against other people's code on real pixels:
Otsu's threshold against scikit-image's, the confusion matrix and IoU against
scikit-learn's, on the Sen1Floods11 hand-labelled Sentinel-1 scenes in ../shared/data."""

import numpy as np
import pytest
import torch

from instageo.model.baselines import _otsu, baselines
from instageo.model.data import Split
from tests.conftest import SHARED_DATA

SCENES = SHARED_DATA / "sen1floods11"
TRAIN = ("Ghana_53713", "Ghana_83483", "Mekong_333434", "Ghana_97059")
TEST = ("Nigeria_812045", "Spain_7370579")


def scenes(names):
    """VV, VH (dB) and hand labels of whole scenes, one scene a chip."""
    import rasterio

    images, labels = [], []
    for name in names:
        with rasterio.open(SCENES / f"{name}_S1Hand.tif") as dataset:
            images.append(dataset.read().astype(np.float32))
        with rasterio.open(SCENES / f"{name}_LabelHand.tif") as dataset:
            labels.append(dataset.read(1).astype(np.int64))
    return np.stack(images), np.stack(labels)


def as_split(images, labels, mean, std):
    """A Split as load_splits makes it: normalised, a gap (NaN) read as 0."""
    x = (images - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    valid = ~np.isnan(x).any(1)
    x = np.nan_to_num(x, nan=0.0)[:, :, None]  # (N, C, T=1, H, W)
    n = len(images)
    return Split(torch.from_numpy(x), torch.from_numpy(valid), torch.from_numpy(labels), [str(i) for i in range(n)],
                 torch.zeros(n, 1, 2), torch.zeros(n, 2))


@pytest.fixture(scope="module")
def real():
    if not SCENES.is_dir():
        pytest.skip("../shared/data/sen1floods11 is missing")
    (train_x, train_y), (test_x, test_y) = scenes(TRAIN), scenes(TEST)
    mean = [float(np.nanmean(train_x[:, c])) for c in range(2)]
    std = [float(np.nanstd(train_x[:, c])) for c in range(2)]
    return train_x, train_y, test_x, test_y, mean, std


def test_otsu_on_real_vv_is_scikit_images_threshold(real):
    from skimage.filters import threshold_otsu

    train_x, train_y = real[0], real[1]
    vv = train_x[:, 0][(train_y != -1) & ~np.isnan(train_x[:, 0])]
    assert vv.size > 100_000 and _otsu(vv) == pytest.approx(threshold_otsu(vv, nbins=256), abs=1e-4)


def test_vv_baseline_on_held_out_scenes_matches_scikit_learn_metrics(real):
    """The VV Otsu baseline's test confusion matrix and IoUs, recomputed independently:
    scikit-image's threshold on the train scenes' labelled VV, scikit-learn's metrics on the
    test scenes' labelled pixels."""
    from skimage.filters import threshold_otsu
    from sklearn.metrics import confusion_matrix, jaccard_score

    train_x, train_y, test_x, test_y, mean, std = real
    data = {"train": as_split(train_x, train_y, mean, std), "test": as_split(test_x, test_y, mean, std)}
    found = baselines(data, ["vv", "vh"], mean, std, classes=2, ignore_index=-1, regression=False)
    assert set(found) == {"majority", "otsu_vv", "otsu_vh", "minimum_distance"}

    fit = (train_y != -1) & ~np.isnan(train_x[:, 0])
    threshold = threshold_otsu(train_x[:, 0][fit], nbins=256)
    vv = np.where(np.isnan(test_x[:, 0]), mean[0], test_x[:, 0])  # a gap reads as the band mean
    scored = test_y != -1
    truth, prediction = test_y[scored], (vv[scored] < threshold).astype(np.int64)  # water is dark
    metrics = found["otsu_vv"]["metrics"]
    assert metrics["confusion"] == confusion_matrix(truth, prediction, labels=[0, 1]).tolist()
    assert metrics["iou"] == pytest.approx(jaccard_score(truth, prediction, average=None).tolist(), abs=1e-6)

    majority = found["majority"]["metrics"]
    land = int(np.bincount(train_y[train_y != -1]).argmax())
    assert majority["confusion"] == confusion_matrix(truth, np.full_like(truth, land), labels=[0, 1]).tolist()
    assert metrics["miou"] > majority["miou"]  # the threshold finds water; land everywhere does not


def test_index_thresholds_and_minimum_distance_fit_on_train_only():
    """A stump on NDWI fit on train separates two clean populations; the multi-class
    minimum-distance baseline assigns each pixel its nearest train class mean."""
    rng = np.random.default_rng(0)
    green = rng.uniform(0.05, 0.1, (4, 1, 16, 16)).astype(np.float32)
    nir = np.where(rng.random((4, 1, 16, 16)) < 0.4, 0.02, 0.3).astype(np.float32)
    labels = (nir[:, 0] < 0.1).astype(np.int64)  # water: nir dark, NDWI high
    images = np.concatenate([green, nir], 1)
    split = as_split(images, labels, [0.07, 0.2], [0.02, 0.1])
    found = baselines({"train": split, "test": split}, ["green", "nir"], [0.07, 0.2], [0.02, 0.1], 2, -1, False)
    assert found["ndwi_threshold"]["metrics"]["miou"] == 1.0 and "fit on train" in found["ndwi_threshold"]["method"]

    three = np.stack([np.full((16, 16), c, np.int64) for c in (0, 1, 2, 1)])
    bands = (three[:, None].astype(np.float32) + rng.normal(0, 0.1, (4, 2, 16, 16)).astype(np.float32))
    split = as_split(bands, three, [1.0, 1.0], [1.0, 1.0])
    found = baselines({"train": split, "test": split}, ["a", "b"], [1.0, 1.0], [1.0, 1.0], 3, -1, False)
    assert found["minimum_distance"]["metrics"]["miou"] == 1.0
    assert found["majority"]["metrics"]["confusion"][1] == [0, 512, 0]  # class 1 the most frequent


def test_per_band_otsu_and_minimum_distance_on_real_scenes_match_scikit(real):
    """Otsu on VH is scikit-image's threshold on the train scenes' VH; the two-class minimum
    distance is scikit-learn's NearestCentroid fit on the train pixels, on the same test pixels."""
    from skimage.filters import threshold_otsu
    from sklearn.metrics import confusion_matrix
    from sklearn.neighbors import NearestCentroid

    train_x, train_y, test_x, test_y, mean, std = real
    data = {"train": as_split(train_x, train_y, mean, std), "test": as_split(test_x, test_y, mean, std)}
    found = baselines(data, ["vv", "vh"], mean, std, classes=2, ignore_index=-1, regression=False)

    present = (train_y != -1) & ~np.isnan(train_x).any(1)
    vh_threshold = threshold_otsu(train_x[:, 1][present], nbins=256)
    assert f"vh < {vh_threshold:.4g}" in found["otsu_vh"]["method"]

    fit = train_x.transpose(0, 2, 3, 1)[present]  # (pixels, bands)
    centroid = NearestCentroid().fit(fit, train_y[present])
    scored = test_y != -1
    test_pixels = np.where(np.isnan(test_x), np.array(mean, np.float32)[None, :, None, None], test_x)
    expected = centroid.predict(test_pixels.transpose(0, 2, 3, 1)[scored])
    ours = np.array(found["minimum_distance"]["metrics"]["confusion"])
    theirs = confusion_matrix(test_y[scored], expected, labels=[0, 1])
    # the same to float32 rounding of pixels on the boundary (ours undoes the normalisation)
    assert np.abs(ours - theirs).sum() <= 1e-5 * scored.sum() and ours.sum() == theirs.sum()
