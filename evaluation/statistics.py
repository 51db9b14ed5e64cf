"""Metrics shared by the judge trainer and the evaluation harness (numpy; torch for the k-NN distances)."""

from __future__ import annotations

import numpy as np
import torch


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall (hit rate where the target is 1), specificity (where it is 0), their mean
    (balanced accuracy) and F1 of 0/1 predictions. An undefined rate is 0 (precision, recall, specificity);
    balanced accuracy averages only the defined ones, so a column without positives is not halved."""
    pred, target = pred.astype(bool), target.astype(bool)
    tp = float((pred & target).sum())
    fp = float((pred & ~target).sum())
    fn = float((~pred & target).sum())
    tn = float((~pred & ~target).sum())
    acc = float((pred == target).mean()) if len(pred) else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    defined = [r for r, n in ((recall, tp + fn), (specificity, tn + fp)) if n]
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": acc,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "balanced_accuracy": float(np.mean(defined)) if defined else 0.0,
        "f1": f1,
        "support": int(target.sum()),
    }


def auc(scores: np.ndarray, target: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties given half credit; NaN with one class."""
    target = target.astype(bool)
    npos, nneg = int(target.sum()), int((~target).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[target].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def best_threshold(probs: np.ndarray, target: np.ndarray) -> float:
    """Threshold in (0, 1) that maximises accuracy (chosen on validation data)."""
    grid = np.linspace(0.02, 0.98, 49)
    accs = [((probs >= t) == target.astype(bool)).mean() for t in grid]
    return float(grid[int(np.argmax(accs))])


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½) between Gaussian fits of two feature sets."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    r1 = _sqrtm_psd(s1)
    cross = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def frechet_with_ci(f1: np.ndarray, f2: np.ndarray, boots: int = 50, seed: int = 0) -> dict[str, float]:
    """Fréchet distance with a bias-corrected bootstrap 95% interval (both sets resampled with replacement).

    Resampling duplicates points, which shrinks the covariance estimates and inflates the distance, so
    the replicates are re-centred on the full-sample estimate before taking percentiles.
    """
    rng = np.random.default_rng(seed)
    fd = frechet_distance(f1, f2)
    values = np.array(
        [
            frechet_distance(f1[rng.integers(len(f1), size=len(f1))], f2[rng.integers(len(f2), size=len(f2))])
            for _ in range(boots)
        ]
    )
    lo, hi = np.percentile(values - (values.mean() - fd), [2.5, 97.5])
    return {"fd": fd, "ci95": [float(max(lo, 0.0)), float(hi)], "n1": len(f1), "n2": len(f2)}


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    return torch.cat(
        [torch.cdist(x[s : s + chunk], x).topk(k + 1, largest=False).values[:, k] for s in range(0, len(x), chunk)]
    )


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    hits = torch.cat(
        [(torch.cdist(points[s : s + chunk], centres) <= radii[None]).any(1) for s in range(0, len(points), chunk)]
    )
    return float(hits.float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019): each set's manifold is the union of
    balls reaching each point's k-th nearest neighbour in that set. Precision: share of fakes inside the
    real manifold (realism); recall: share of reals inside the fake manifold (coverage)."""
    r, f = torch.from_numpy(np.asarray(real, np.float32)), torch.from_numpy(np.asarray(fake, np.float32))
    return {"precision": _covered(f, r, _kth_nn_radius(r, k)), "recall": _covered(r, f, _kth_nn_radius(f, k)), "k": k}
