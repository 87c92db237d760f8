"""The model and the data: multinomial logistic (softmax) regression in NumPy on scikit-learn's
digits (8x8 images, 64 pixels, 10 classes).

Weights are ``[w, b]`` (float32, shapes ``(64, 10)`` and ``(10,)``): 650 numbers, which is what
travels as an `ArrayRecord`. A linear model keeps the number of noised parameters small, which
is what local differential privacy pays for. Nothing is downloaded: the data ships inside
scikit-learn.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits

Weights = list[npt.NDArray[np.float32]]
Features = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

NUM_FEATURES = 64
NUM_CLASSES = 10
BATCH_SIZE = 32
TEST_FRACTION = 0.2  # of the whole dataset, held out for the ServerApp's central evaluation
SEED = 42


def init_weights() -> Weights:
    """The starting model: all zeros (every class equally likely)."""
    return [
        np.zeros((NUM_FEATURES, NUM_CLASSES), dtype=np.float32),
        np.zeros(NUM_CLASSES, dtype=np.float32),
    ]


def _probabilities(weights: Weights, x: Features) -> Features:
    w, b = weights
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probs: Features = exp / exp.sum(axis=1, keepdims=True)
    return probs


def train(
    weights: Weights, x: Features, y: Labels, epochs: int, lr: float, seed: int = 0
) -> Weights:
    """Mini-batch SGD on softmax cross-entropy; returns new weights (the inputs are not changed)."""
    w, b = (np.array(a, dtype=np.float32) for a in weights)  # copies: the inputs stay as they are
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            xb = x[batch]
            d_logits = (_probabilities([w, b], xb) - onehot[batch]) / len(batch)
            w -= lr * xb.T @ d_logits
            b -= lr * d_logits.sum(axis=0)
    return [w, b]


def evaluate(weights: Weights, x: Features, y: Labels) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``weights`` on ``(x, y)``."""
    probs = _probabilities(weights, x)
    loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
    accuracy = (probs.argmax(axis=1) == y).mean()
    return float(loss), float(accuracy)


@lru_cache(maxsize=1)
def load_data() -> tuple[Features, Labels, Features, Labels]:
    """The whole dataset (pixels scaled to [0, 1]) split 80/20 with a fixed seed:
    ``x_train, y_train, x_test, y_test``."""
    digits: Any = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    n_test = int(len(x) * TEST_FRACTION)
    test, train_ = order[:n_test], order[n_test:]
    return x[train_], y[train_], x[test], y[test]


def load_partition(partition_id: int, num_partitions: int) -> tuple[Features, Labels]:
    """Node ``partition_id``'s IID shard of the train split (all of it is trained on: the
    nodes send nothing but their noised updates, so they keep no local test portion)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is not in [0, {num_partitions})")
    x_train, y_train, _, _ = load_data()
    shards = np.array_split(
        np.random.default_rng(SEED + 1).permutation(len(x_train)), num_partitions
    )
    shard = shards[partition_id]
    return x_train[shard], y_train[shard]


def load_test_split() -> tuple[Features, Labels]:
    """The held-out test split, for the ServerApp's central evaluation."""
    _, _, x_test, y_test = load_data()
    return x_test, y_test
