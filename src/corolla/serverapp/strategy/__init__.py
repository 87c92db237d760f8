"""Strategies that run a federated training loop from a ServerApp.

``FedAvg(...).start(grid=..., initial_arrays=..., num_rounds=...)`` returns a `Result`.
"""

from corolla.serverapp.strategy.aggregate import WeightedArrayMean, aggregate_metricrecords
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.result import Result
from corolla.serverapp.strategy.strategy import Strategy

__all__ = ["FedAvg", "Result", "Strategy", "WeightedArrayMean", "aggregate_metricrecords"]
