"""Baselines a model must beat, on the same val and test pixels as the models.

- majority: the train split's most frequent class, everywhere;
- minimum distance, for every classification task: each pixel to the nearest train class
  mean of its band values, the classic supervised baseline of remote sensing;
- for two-class tasks, thresholds the field uses: Otsu's threshold on each band (``otsu_vv``:
  water is dark in SAR, the standard water-mapping threshold), the class below it the one
  whose train pixels are darker; and a threshold on NDWI (green, nir) for water or NDVI
  (red, nir) for vegetation. Every threshold and side is fit on the train split, never on
  val or test.

Band values are the chips' (time-mean over steps) as the reader wrote them (the models'
normalisation undone). Regression tasks get the train mean.
"""

from __future__ import annotations

import numpy as np

from instageo.data.normalise import STD_FLOOR
from instageo.model.data import Split
from instageo.model.metrics import regression_metrics, segmentation_metrics

INDICES = {  # name -> (bands it needs, formula on a dict of band arrays)
    "NDWI": (("green", "nir"), lambda b: _ratio(b["green"], b["nir"])),
    "NDVI": (("nir", "red"), lambda b: _ratio(b["nir"], b["red"])),
}
THRESHOLDS = 64  # candidate thresholds (quantiles of the train values) a stump tries


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a - b, a + b, out=np.zeros_like(a), where=np.abs(a + b) > 1e-9)


def baselines(data: dict[str, Split], bands: list[str], mean: list[float], std: list[float],
              classes: int, ignore_index: int, regression: bool) -> dict[str, dict]:
    """{name: {"method", "metrics" (test, else val), "val_metrics"}} for each baseline."""
    train = data.get("train")
    if train is None or not len(train):
        return {}
    scored = [name for name in ("test", "val") if name in data]
    pixels = {name: _pixels(data[name], bands, mean, std, ignore_index, regression) for name in ["train", *scored]}

    def report(method: str, predict) -> dict:
        out = {"method": method}
        for key, split in (("metrics", scored[0] if scored else None), ("val_metrics", "val" if "val" in data else None)):
            if split is not None:
                values, truth, _ = pixels[split]
                prediction = predict(values)
                out[key] = (regression_metrics(prediction, truth) if regression
                            else segmentation_metrics(prediction, truth, classes))
        return out

    values, truth, valid = pixels["train"]
    if regression:
        level = float(truth.mean())
        return {"train_mean": report(f"the train split's mean ({level:.4g}) everywhere",
                                     lambda v: np.full(len(v[bands[0]]), level))}
    majority = int(np.bincount(truth, minlength=classes).argmax())
    found = {"majority": report(f"class {majority} (the train split's most frequent) everywhere",
                                lambda v: np.full(len(v[bands[0]]), majority))}
    # thresholds and class means are fit where imagery is present (a gap reads as the band mean)
    values, truth = {band: v[valid] for band, v in values.items()}, truth[valid]
    if not len(truth):
        return found
    if classes == 2:
        for band in bands:
            threshold, below = _otsu(values[band]), _dark_class(values[band], truth)
            found[f"otsu_{band}"] = report(f"class {below} where {band} < {threshold:.4g}, else {1 - below} (Otsu)",
                                           lambda v, b=band, t=threshold, c=below: np.where(v[b] < t, c, 1 - c))
        for name, (needs, formula) in INDICES.items():
            if all(b in bands for b in needs):
                threshold, below = _stump(formula(values), truth)
                found[f"{name.lower()}_threshold"] = report(
                    f"class {below} where {name} < {threshold:.4g}, else {1 - below} (fit on train)",
                    lambda v, f=formula, t=threshold, c=below: np.where(f(v) < t, c, 1 - c))
    centres = np.stack([[values[b][truth == c].mean() if (truth == c).any() else np.inf for b in bands]
                        for c in range(classes)])
    found["minimum_distance"] = report(
        "each pixel to the nearest train class mean of its band values",
        lambda v: np.argmin(((np.stack([v[b] for b in bands], 1)[:, None, :] - centres[None]) ** 2).sum(-1), 1))
    return found


def _pixels(split: Split, bands, mean, std, ignore_index: int, regression: bool):
    """Band values (time-mean, in the reader's units), labels and imagery-present flags of the
    pixels models are scored on: every labelled pixel."""
    x = split.x.numpy()  # (N, C, T, H, W), normalised
    scale = np.maximum(np.asarray(std, np.float32), STD_FLOOR)[None, :, None, None, None]  # as Normaliser
    raw = x * scale + np.asarray(mean, np.float32)[None, :, None, None, None]
    per_band = raw.mean(2)  # (N, C, H, W)
    y = split.y.numpy()
    labelled = ~np.isnan(y) if regression else y != ignore_index
    return ({band: per_band[:, i][labelled] for i, band in enumerate(bands)}, y[labelled],
            split.valid.numpy()[labelled])


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of the histogram that maximises the between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mean_below = np.cumsum(counts * centres) / np.maximum(weight, 1)
    mean_above = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between))])


def _dark_class(values: np.ndarray, truth: np.ndarray) -> int:
    """The class whose train pixels are darker on average (for SAR water on VV, 'water')."""
    means = [values[truth == c].mean() if (truth == c).any() else np.inf for c in (0, 1)]
    return int(np.argmin(means))


def _stump(values: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """The threshold and the class below it that score best (mIoU) on the train pixels."""
    best = (-1.0, 0.0, 0)
    for threshold in np.unique(np.quantile(values, np.linspace(0.01, 0.99, THRESHOLDS))):
        for below in (0, 1):
            prediction = np.where(values < threshold, below, 1 - below)
            score = segmentation_metrics(prediction, truth, 2)["miou"]
            if score > best[0]:
                best = (score, float(threshold), below)
    return best[1], best[2]
