"""Digits with local differential privacy: FedAdam trains a softmax regression on scikit-learn's
bundled digits, and every node clips and noises its updates with `LocalDpMod`."""
