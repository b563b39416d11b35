"""Test-split metrics: mIoU, per-class IoU, F1, accuracy, ROC-AUC (binary); RMSE/MAE/R^2."""

from __future__ import annotations

import numpy as np


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, classes: int,
                         scores: np.ndarray | None = None) -> dict:
    """``pred``/``truth``: class ids of the labelled pixels; ``scores``: P(class 1) for AUC."""
    confusion = np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(np.float64)
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    present = (tp + fn) > 0  # classes in the test labels
    iou = np.divide(tp, tp + fp + fn, out=np.zeros(classes), where=(tp + fp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(classes), where=(2 * tp + fp + fn) > 0)
    metrics = {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "iou": [round(float(v), 6) for v in iou],
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / max(confusion.sum(), 1)),
        "pixels": int(confusion.sum()),
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted
    }
    if classes == 2 and scores is not None and 0 < truth.sum() < truth.size:
        metrics["roc_auc"] = roc_auc(scores, truth)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    positives = truth.sum()
    negatives = len(truth) - positives
    return float((ranks[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    error = pred - truth
    variance = float(((truth - truth.mean()) ** 2).sum())
    return {
        "rmse": round(float(np.sqrt((error**2).mean())), 6),
        "mae": round(float(np.abs(error).mean()), 6),
        "r2": round(1 - float((error**2).sum()) / variance, 6) if variance > 0 else 0.0,
        "pixels": int(truth.size),
    }
