"""How a rhythm ensemble joins its two models' probabilities: the weighted mean (issue 24's equal weights,
the default), or a logistic regression learned on recordings held out of training (lever 1 of
docs/decisions/af-detector-levers.md). The regression is saved as plain numbers and evaluated with numpy,
as the trees are: the served model needs no scikit-learn and no unpickler."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOGISTIC = "logistic"  # its name in params (ecgpipe.params.ENSEMBLE_COMBINERS) and ensemble.json
# declared with the lever, before any fold was scored: scikit-learn's default L2 penalty and C
SETTINGS = {"C": 1.0, "max_iter": 1000}  # max_iter: room for lbfgs to converge, not a modelling choice
LOG_FLOOR = 1e-7  # a network probability rounded to 0 still has a finite log


def combiner_inputs(network: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
    """(n, 2 * classes): the network's log probabilities (its softmax undone, up to a constant) beside
    the trees' probabilities."""
    return np.hstack([np.log(np.clip(np.asarray(network, dtype=np.float64), LOG_FLOOR, 1.0)),
                      np.asarray(rhythm, dtype=np.float64)])


@dataclass(frozen=True)
class LogisticCombiner:
    """A fitted multinomial logistic regression on :func:`combiner_inputs`: ``coef`` (columns, inputs),
    ``intercept`` (columns); a two-class one has a single column, as scikit-learn's."""

    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def fit(cls, network: np.ndarray, rhythm: np.ndarray, y: np.ndarray, class_names: list[str]) -> LogisticCombiner:
        from sklearn.linear_model import LogisticRegression

        missing = [c for k, c in enumerate(class_names) if not (np.asarray(y) == k).any()]
        if missing:  # a class the regression never saw would get no column
            raise ValueError(f"no recording of class {', '.join(missing)} among those the combiner is fitted on; "
                             "expected every class")
        model = LogisticRegression(**SETTINGS).fit(combiner_inputs(network, rhythm), y)
        return cls(np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64))

    def __call__(self, network: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
        """Probability per class of each row, as scikit-learn's ``predict_proba`` gives it."""
        z = combiner_inputs(network, rhythm) @ self.coef.T + self.intercept
        if z.shape[1] == 1:
            positive = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {"kind": LOGISTIC, "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, spec: dict, n_classes: int) -> LogisticCombiner:
        """ValueError, saying what was expected, unless ``spec`` is a logistic combiner of ``n_classes``."""
        columns = 1 if n_classes == 2 else n_classes
        try:
            coef = np.asarray(spec["coef"], dtype=np.float64)
            intercept = np.asarray(spec["intercept"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"expected kind {LOGISTIC!r}, coef and intercept, got {spec!r}") from None
        if spec.get("kind") != LOGISTIC or coef.shape != (columns, 2 * n_classes) or intercept.shape != (columns,):
            raise ValueError(f"expected kind {LOGISTIC!r}, coef of shape ({columns}, {2 * n_classes}) and intercept of "
                             f"{columns} for {n_classes} classes, got kind {spec.get('kind')!r}, coef {coef.shape}, "
                             f"intercept {intercept.shape}")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ValueError("expected finite coefficients")
        return cls(coef, intercept)
