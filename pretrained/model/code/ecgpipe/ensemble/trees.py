"""A fitted gradient-boosted tree model (scikit-learn's HistGradientBoostingClassifier) as plain
arrays, saved without pickle and evaluated with numpy: the served model needs neither scikit-learn
nor an unpickler (loading a pickle runs code; this file is only numbers)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgpipe.core.errors import ModelFileError

# The tree model's settings, declared before any fold was scored (issue 24's study):
# classes weighted as the network's balanced batches, a fixed number of rounds (no early stopping,
# so no validation split is carved out of the training recordings)
SETTINGS = {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 31, "l2_regularization": 1.0,
            "class_weight": "balanced", "early_stopping": False}
NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")


@dataclass(frozen=True)
class BoostedTrees:
    """Trees of one model: ``nodes`` (every tree's nodes, one after another, left/right indices
    within the tree), ``tree_start`` (each tree's first node), ``tree_class`` (the raw score column
    it adds to), ``baseline`` (raw score before any tree); binary models have one raw column."""

    nodes: dict[str, np.ndarray]
    tree_start: np.ndarray
    tree_class: np.ndarray
    baseline: np.ndarray
    n_features: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, seed: int) -> BoostedTrees:
        # fitting only: serving evaluates the exported arrays, without scikit-learn
        from sklearn.ensemble import HistGradientBoostingClassifier

        x = np.asarray(x, dtype=np.float64)
        # a feature no training recording has (too few beats in all) cannot be binned: held constant,
        # no tree splits on it, and its NaN at prediction time changes nothing
        x = np.where(np.isnan(x).all(axis=0), 0.0, x)
        model = HistGradientBoostingClassifier(**SETTINGS, random_state=seed).fit(x, y)
        return cls.from_sklearn(model)

    @classmethod
    def from_sklearn(cls, model) -> BoostedTrees:
        """The trees of a fitted HistGradientBoostingClassifier on numeric features."""
        trees = [(k, tree.nodes) for stage in model._predictors for k, tree in enumerate(stage)]
        if any(t["is_categorical"].any() for _, t in trees):
            raise ValueError("categorical splits are not supported: the rhythm features are numeric")
        starts = np.cumsum([0] + [len(t) for _, t in trees[:-1]]).astype(np.int64)
        nodes = {f: np.concatenate([t[f] for _, t in trees]) for f in NODE_FIELDS}
        return cls(nodes, starts, np.array([k for k, _ in trees], dtype=np.int64),
                   np.asarray(model._baseline_prediction, dtype=np.float64).ravel(), int(model.n_features_in_))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (n, columns): the baseline plus every tree's leaf value."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected features of shape (n, {self.n_features}), got {x.shape}")
        n = self.nodes
        raw = np.tile(self.baseline, (len(x), 1))
        rows = np.arange(len(x))
        for start, column in zip(self.tree_start, self.tree_class):
            node = np.full(len(x), start)
            leaf = n["is_leaf"][node].astype(bool)
            while not leaf.all():  # every sample one level down per pass, until all sit on leaves
                inner = node[~leaf]
                value = x[rows[~leaf], n["feature_idx"][inner]]
                go_left = np.where(np.isnan(value), n["missing_go_to_left"][inner].astype(bool),
                                   value <= n["num_threshold"][inner])
                node[~leaf] = start + np.where(go_left, n["left"][inner], n["right"][inner])
                leaf = n["is_leaf"][node].astype(bool)
            raw[:, column] += n["value"][node]
        return raw

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, classes), as the classifier's ``predict_proba``."""
        raw = self.raw(x)
        if raw.shape[1] == 1:  # binary: the logistic of one raw score
            p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        np.savez(path, tree_start=self.tree_start, tree_class=self.tree_class, baseline=self.baseline,
                 n_features=np.int64(self.n_features), **{f"node_{k}": v for k, v in self.nodes.items()})

    @classmethod
    def load(cls, path: Path) -> BoostedTrees:
        try:
            with np.load(path, allow_pickle=False) as data:  # numbers only: nothing in it can run
                nodes = {f: data[f"node_{f}"] for f in NODE_FIELDS}
                return cls(nodes, data["tree_start"], data["tree_class"], data["baseline"], int(data["n_features"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFileError(f"{path}: not a saved tree model ({exc}); expected the trees.npz of an "
                                 "ensemble folder") from None
