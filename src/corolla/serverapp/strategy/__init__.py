"""Strategies that run a federated training loop from a ServerApp.

``FedAvg(...).start(grid, initial_arrays, num_rounds)`` returns a `Result`. Subclass any of them
as in Flower: override ``configure_*(server_round, arrays, config, grid)`` and
``aggregate_*(server_round, replies)``.
"""

from corolla.serverapp.strategy.aggregate import WeightedArrayMean, aggregate_metricrecords
from corolla.serverapp.strategy.bulyan import Bulyan
from corolla.serverapp.strategy.dp_adaptive_clipping import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
)
from corolla.serverapp.strategy.dp_fixed_clipping import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from corolla.serverapp.strategy.fedadagrad import FedAdagrad
from corolla.serverapp.strategy.fedadam import FedAdam
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedavgm import FedAvgM
from corolla.serverapp.strategy.fedmedian import FedMedian
from corolla.serverapp.strategy.fedprox import FedProx
from corolla.serverapp.strategy.fedtrimmedavg import FedTrimmedAvg
from corolla.serverapp.strategy.fedxgb_bagging import FedXgbBagging
from corolla.serverapp.strategy.fedxgb_cyclic import FedXgbCyclic
from corolla.serverapp.strategy.fedyogi import FedYogi
from corolla.serverapp.strategy.krum import Krum
from corolla.serverapp.strategy.multikrum import MultiKrum
from corolla.serverapp.strategy.qfedavg import QFedAvg
from corolla.serverapp.strategy.result import Result
from corolla.serverapp.strategy.strategy import Strategy

__all__ = [
    "Bulyan",
    "DifferentialPrivacyClientSideAdaptiveClipping",
    "DifferentialPrivacyClientSideFixedClipping",
    "DifferentialPrivacyServerSideAdaptiveClipping",
    "DifferentialPrivacyServerSideFixedClipping",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedXgbBagging",
    "FedXgbCyclic",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "QFedAvg",
    "Result",
    "Strategy",
    "WeightedArrayMean",
    "aggregate_metricrecords",
]
