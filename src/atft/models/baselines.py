"""Simple reference models over arrays, in scikit-learn style: the yardsticks ATFT-GAT-FAN is compared with.

Each estimator maps features ``X`` [n, F] to one forecast per horizon ``[n, H]``; labels ``y`` [n, H] may be
NaN where unknown, and each horizon is fitted on its own finite rows. They know nothing of panels, splits or
run folders: ``atft.workflow.baselines`` gathers a run's rows and turns these into prediction frames.

- :class:`Ridge`: closed-form ridge regression on standardized inputs, the linear yardstick.
- :class:`LightGBMRegressor`: gradient-boosted trees, one model per horizon, early-stopped on validation;
  the non-linear yardstick that needs no tuning.
- :class:`RuleBaseline`: one feature, signed (momentum, short-term reversal): what a textbook rule gives.
- :class:`RandomBaseline`: standard-normal noise, the floor every metric should sit near (RankIC 0).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

_CHUNK_ROWS = 65_536  # rows converted to float64 at a time: bounds the temporaries to ~100 MB at 188 features


def _as_2d_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"y must be [n] or [n, H], got shape {y.shape}")
    return y


def _check_x(x: np.ndarray, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"X must be [n, F], got shape {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"X has {x.shape[1]} features, the model was fitted on {n_features}")
    return x


class Ridge:
    """Ridge regression in closed form, on inputs standardized with the training mean and std.

    For: the linear yardstick. Whatever signal a linear map of the features holds, this finds it, so a deep
    model that does not beat it has learned nothing a linear model could not.

    ``fit(X, y)``: each column of ``X`` is standardized with its mean and std over the finite training values
    (a constant column keeps std 1), then NaN inputs become 0 (the column mean). Each horizon ``y[:, j]`` is
    fitted on its own finite rows, minimising ``|y - X w - b|^2 + alpha |w|^2`` with an unpenalized
    intercept ``b``. ``predict(X)`` returns [n, H] float64. A horizon without any finite label predicts 0.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def _standardized(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return np.where(np.isfinite(z), z, 0.0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Ridge:
        x = _check_x(X)
        y = _as_2d_labels(y)
        if len(y) != len(x):
            raise ValueError(f"X has {len(x)} rows and y {len(y)}")
        n, f = x.shape
        # pass 1: column mean and std over the finite values
        total, total_sq, count = np.zeros(f), np.zeros(f), np.zeros(f)
        for start in range(0, n, _CHUNK_ROWS):
            block = np.asarray(x[start : start + _CHUNK_ROWS], dtype=np.float64)
            seen = np.isfinite(block)
            block = np.where(seen, block, 0.0)
            total += block.sum(0)
            total_sq += (block * block).sum(0)
            count += seen.sum(0)
        mean = total / np.maximum(count, 1)
        var = total_sq / np.maximum(count, 1) - mean * mean
        std = np.sqrt(np.maximum(var, 0.0))
        self.mean_ = mean
        self.scale_ = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)

        # pass 2: one Gram matrix over all rows, minus, per horizon, the rows whose label is missing
        labelled = np.isfinite(y)  # [n, H]
        y0 = np.where(labelled, y, 0.0)
        gram, sums = np.zeros((f, f)), np.zeros(f)
        missing_gram = [np.zeros((f, f)) for _ in range(y.shape[1])]
        missing_sum = [np.zeros(f) for _ in range(y.shape[1])]
        xty = np.zeros((f, y.shape[1]))
        for start in range(0, n, _CHUNK_ROWS):
            z = self._standardized(x[start : start + _CHUNK_ROWS])
            gram += z.T @ z
            sums += z.sum(0)
            xty += z.T @ y0[start : start + _CHUNK_ROWS]
            for j in range(y.shape[1]):
                gone = ~labelled[start : start + _CHUNK_ROWS, j]
                if gone.any():
                    zg = z[gone]
                    missing_gram[j] += zg.T @ zg
                    missing_sum[j] += zg.sum(0)

        self.coef_ = np.zeros((f, y.shape[1]))
        self.intercept_ = np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            n_j = int(labelled[:, j].sum())
            if n_j == 0:
                continue
            x_mean = (sums - missing_sum[j]) / n_j  # [F]
            y_mean = y0[:, j].sum() / n_j
            # centred Gram and cross product over the labelled rows: the intercept is not penalized
            g = gram - missing_gram[j] - n_j * np.outer(x_mean, x_mean)
            c = xty[:, j] - n_j * x_mean * y_mean
            w = np.linalg.solve(g + self.alpha * np.eye(f), c)
            self.coef_[:, j] = w
            self.intercept_[j] = y_mean - x_mean @ w
        self.n_features_in_ = f
        return self

    @property
    def n_parameters(self) -> int:
        """Weights and intercepts once fitted (F x H + H), 0 before."""
        return int(self.coef_.size + self.intercept_.size) if hasattr(self, "coef_") else 0

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = _check_x(X, self.n_features_in_)
        out = np.empty((len(x), self.coef_.shape[1]))
        for start in range(0, len(x), _CHUNK_ROWS):
            z = self._standardized(x[start : start + _CHUNK_ROWS])
            out[start : start + _CHUNK_ROWS] = z @ self.coef_ + self.intercept_
        return out


class LightGBMRegressor:
    """Gradient-boosted trees, one LightGBM model per horizon, early-stopped on a validation set.

    For: the non-linear yardstick. Trees find interactions and thresholds in the features without any
    tuning, so a deep model's gain over them is what its sequence and graph modelling adds.

    ``fit(X, y, X_valid, y_valid)``: horizon j trains on the rows where ``y[:, j]`` is finite, with the l2
    loss, for at most ``num_boost_round`` rounds, and stops when the validation l2 (on the finite rows of
    ``y_valid[:, j]``) has not improved for ``early_stopping_rounds``; the best iteration predicts.
    NaN inputs are LightGBM's missing values. ``deterministic`` with a fixed ``seed`` and ``num_threads``
    gives the same trees on every run. ``best_iterations_`` holds each horizon's best iteration.
    """

    def __init__(
        self,
        *,
        num_boost_round: int = 500,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 200,
        feature_fraction: float = 0.8,
        early_stopping_rounds: int = 30,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.num_boost_round = int(num_boost_round)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.params = {
            "objective": "regression",
            "metric": "l2",
            "learning_rate": float(learning_rate),
            "num_leaves": int(num_leaves),
            "min_data_in_leaf": int(min_data_in_leaf),
            "feature_fraction": float(feature_fraction),
            "seed": int(seed),
            "deterministic": True,
            "force_row_wise": True,  # no timing-dependent choice between row- and column-wise histograms
            "num_threads": int(num_threads),
            "verbosity": -1,
        }

    def fit(
        self, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray
    ) -> LightGBMRegressor:
        x, x_valid = _check_x(X), _check_x(X_valid, np.asarray(X).shape[1])
        y, y_valid = _as_2d_labels(y), _as_2d_labels(y_valid)
        if y.shape[1] != y_valid.shape[1]:
            raise ValueError(f"y has {y.shape[1]} horizons and y_valid {y_valid.shape[1]}")
        self.boosters_: list[lgb.Booster | None] = []
        self.best_iterations_: list[int] = []
        for j in range(y.shape[1]):
            rows, valid_rows = np.isfinite(y[:, j]), np.isfinite(y_valid[:, j])
            if not rows.any() or not valid_rows.any():
                self.boosters_.append(None)  # nothing to learn from or to stop on: predicts 0
                self.best_iterations_.append(0)
                continue
            train = lgb.Dataset(x[rows], y[rows, j], params={"verbosity": -1}, free_raw_data=True)
            valid = lgb.Dataset(x_valid[valid_rows], y_valid[valid_rows, j], reference=train)
            booster = lgb.train(
                self.params,
                train,
                num_boost_round=self.num_boost_round,
                valid_sets=[valid],
                valid_names=["valid"],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            self.boosters_.append(booster)
            self.best_iterations_.append(int(booster.best_iteration))
        self.n_features_in_ = x.shape[1]
        return self

    @property
    def n_parameters(self) -> int:
        """Leaf values of the trees that predict (each horizon's first ``best_iteration`` trees), 0 before."""
        total = 0
        for booster, best in zip(
            getattr(self, "boosters_", []), getattr(self, "best_iterations_", []), strict=True
        ):
            if booster is not None:
                trees = booster.dump_model(num_iteration=best or None)["tree_info"]
                total += sum(int(tree["num_leaves"]) for tree in trees)
        return total

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = _check_x(X, self.n_features_in_)
        out = np.zeros((len(x), len(self.boosters_)))
        for j, booster in enumerate(self.boosters_):
            if booster is not None:
                out[:, j] = booster.predict(x, num_iteration=self.best_iterations_[j] or None)
        return out


class RuleBaseline:
    """A one-feature rule: predicts ``sign * X[:, column_index]`` for every horizon.

    For: the textbook signals a model must beat to be worth its cost: medium-term momentum (``ret_20d``,
    sign +1) and short-term reversal (``ret_5d``, sign -1). Nothing is learned; ``fit`` only records the
    number of horizons (``n_outputs`` given here skips it).
    """

    def __init__(self, column_index: int, sign: float = 1.0, n_outputs: int | None = None) -> None:
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign}")
        self.column_index, self.sign, self.n_outputs = int(column_index), float(sign), n_outputs

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> RuleBaseline:
        x = _check_x(X)
        if not 0 <= self.column_index < x.shape[1]:
            raise ValueError(f"column_index {self.column_index} is outside X's {x.shape[1]} features")
        if y is not None:
            self.n_outputs = _as_2d_labels(y).shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = _check_x(X)
        column = self.sign * np.asarray(x[:, self.column_index], dtype=np.float64)
        return np.repeat(column[:, None], self.n_outputs or 1, axis=1)


class RandomBaseline:
    """Standard-normal predictions, the same for the same ``seed`` and number of rows.

    For: the floor. Its RankIC is 0 up to noise, so it shows how far from 0 a metric wanders by chance on
    the same rows. ``fit`` only records the number of horizons (``n_outputs`` given here skips it).
    """

    def __init__(self, seed: int = 0, n_outputs: int | None = None) -> None:
        self.seed, self.n_outputs = int(seed), n_outputs

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> RandomBaseline:
        if y is not None:
            self.n_outputs = _as_2d_labels(y).shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        return np.random.default_rng(self.seed).standard_normal((n, self.n_outputs or 1))
