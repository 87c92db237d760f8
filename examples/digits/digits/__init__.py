"""Digits: a small MLP learns handwritten digits (scikit-learn's bundled dataset) with FedAvg."""
