"""The model and the data: a one-hidden-layer MLP in NumPy on scikit-learn's digits (8x8 images).

Weights are a list of arrays ``[w1, b1, w2, b2]`` (float32), which is what travels as an
`ArrayRecord`. Nothing is downloaded: the dataset ships inside scikit-learn.
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
Split = tuple[Features, Labels, Features, Labels]  # x_train, y_train, x_test, y_test

NUM_FEATURES = 64
NUM_CLASSES = 10
HIDDEN = 32
BATCH_SIZE = 32
TEST_FRACTION = 0.2  # of the whole dataset, held out for the ServerApp's central evaluation
LOCAL_TEST_FRACTION = 0.2  # of each node's shard, kept for the ClientApp's local evaluation
SEED = 42


def init_weights(seed: int = 0, hidden: int = HIDDEN) -> Weights:
    """Fresh weights: He-initialised layers, zero biases."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(scale=np.sqrt(2.0 / NUM_FEATURES), size=(NUM_FEATURES, hidden))
    w2 = rng.normal(scale=np.sqrt(2.0 / hidden), size=(hidden, NUM_CLASSES))
    return [
        w1.astype(np.float32),
        np.zeros(hidden, dtype=np.float32),
        w2.astype(np.float32),
        np.zeros(NUM_CLASSES, dtype=np.float32),
    ]


def _forward(weights: Weights, x: Features) -> tuple[Features, Features]:
    """Hidden activations and class probabilities."""
    w1, b1, w2, b2 = weights
    hidden = np.maximum(x @ w1 + b1, 0.0)
    logits = hidden @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return hidden, exp / exp.sum(axis=1, keepdims=True)


def train(
    weights: Weights, x: Features, y: Labels, epochs: int, lr: float, seed: int = 0
) -> Weights:
    """Mini-batch SGD on softmax cross-entropy; returns new weights (the inputs are not changed)."""
    w1, b1, w2, b2 = (np.array(w, dtype=np.float32) for w in weights)  # writable copies
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            xb, yb = x[batch], onehot[batch]
            hidden, probs = _forward([w1, b1, w2, b2], xb)
            d_logits = (probs - yb) / len(batch)
            d_hidden = (d_logits @ w2.T) * (hidden > 0)
            w2 -= lr * hidden.T @ d_logits
            b2 -= lr * d_logits.sum(axis=0)
            w1 -= lr * xb.T @ d_hidden
            b1 -= lr * d_hidden.sum(axis=0)
    return [w1, b1, w2, b2]


def evaluate(weights: Weights, x: Features, y: Labels) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``weights`` on ``(x, y)``."""
    _, probs = _forward(weights, x)
    loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
    accuracy = (probs.argmax(axis=1) == y).mean()
    return float(loss), float(accuracy)


@lru_cache(maxsize=1)
def load_data() -> Split:
    """The whole dataset (pixels scaled to [0, 1]), split 80/20 with a fixed seed."""
    digits: Any = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    n_test = int(len(x) * TEST_FRACTION)
    test, train_ = order[:n_test], order[n_test:]
    return x[train_], y[train_], x[test], y[test]


def load_partition(partition_id: int, num_partitions: int) -> Split:
    """Node ``partition_id``'s IID shard of the train split, as local train and test portions."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is not in [0, {num_partitions})")
    x_train, y_train, _, _ = load_data()
    shards = np.array_split(
        np.random.default_rng(SEED + 1).permutation(len(x_train)), num_partitions
    )
    shard = shards[partition_id]
    n_test = int(len(shard) * LOCAL_TEST_FRACTION)
    local_test, local_train = shard[:n_test], shard[n_test:]
    return x_train[local_train], y_train[local_train], x_train[local_test], y_train[local_test]


def load_test_split() -> tuple[Features, Labels]:
    """The held-out test split, for the ServerApp's central evaluation."""
    _, _, x_test, y_test = load_data()
    return x_test, y_test
