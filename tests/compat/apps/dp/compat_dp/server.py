"""ServerApp of compat-dp: central DP (the client-side fixed-clipping wrapper), then local DP
(plain FedAvg, the clients' LocalDpMod), each result checked against the noise its published
calibration gives, and the central rounds' privacy read from an RDP accountant."""

import math

import numpy as np

from corolla.app import ArrayRecord, Context
from corolla.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
    ServerApp,
)
from corolla.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

from .client import DIM, LOCAL_DP

app = ServerApp()
E = np.ones(DIM) / np.sqrt(DIM)  # the direction of every client update
DELTA = 1e-5


def check_noise(name: str, residual: np.ndarray, std: float) -> None:
    """``residual`` should be N(0, std^2) in each coordinate. Over 2000 coordinates the sample
    standard deviation has a relative standard error of 1 / sqrt(2 * 2000) = 1.6%, so 10% is
    over 6 standard errors; the projection on E is N(0, std^2), so 5 std is as far."""
    sample = float(np.std(residual))
    assert abs(sample / std - 1) < 0.1, f"{name}: noise std {sample:.5f}, expected {std:.5f}"
    along = float(residual @ E)
    assert abs(along) < 5 * std, f"{name}: {along:.4f} along the update (clipping missed?)"


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of the Gaussian mechanism with sensitivity / sigma = ``mu`` at
    ``delta`` (Balle and Wang, 2018, Theorem 8): delta(eps) = Phi(mu/2 - eps/mu) -
    e^eps Phi(-mu/2 - eps/mu), solved by bisection (delta falls as eps grows)."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    low, high = 0.0, 100.0
    for _ in range(200):
        eps = (low + high) / 2
        if phi(mu / 2 - eps / mu) - math.exp(eps) * phi(-mu / 2 - eps / mu) > delta:
            low = eps
        else:
            high = eps
    return high


def classic_rdp_epsilon(rounds: int, z: float, delta: float) -> float:
    """The RDP bound of ``rounds`` Gaussian releases at noise multiplier ``z`` (RDP
    rounds * a / (2 z^2) at order a), converted by Mironov (2017, Proposition 3):
    min over a of rdp(a) + ln(1/delta) / (a - 1), here over the orders 2..63."""
    return min(rounds * a / (2 * z**2) + math.log(1 / delta) / (a - 1) for a in range(2, 64))


def check_accountant(rounds: int, z: float, nodes: int) -> float:
    config = PrivacyConfig(
        target_delta=DELTA,
        population_size=nodes,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    accountant = RdpAccountant(config)
    for _ in range(rounds):
        event = GaussianPrivacyEvent(noise_multiplier=z, sample_size=nodes, population_size=nodes)
        accountant.compose(event)
    spent = accountant.get_privacy_spent()
    assert spent.num_releases == rounds and spent.delta == DELTA, spent
    # No sound accountant reports less than the exact epsilon of the composition (a Gaussian
    # of mu = sqrt(rounds) / z), nor more than the classic RDP conversion.
    low, high = (
        gaussian_epsilon(math.sqrt(rounds) / z, DELTA),
        classic_rdp_epsilon(rounds, z, DELTA),
    )
    assert low <= spent.epsilon <= high, (low, spent.epsilon, high)
    return spent.epsilon


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    nodes, rounds = int(config["num-nodes"]), int(config["central-rounds"])
    z, clip = float(config["noise-multiplier"]), float(config["clipping-norm"])
    sizes = {"fraction_evaluate": 0.0, "min_train_nodes": nodes, "min_available_nodes": nodes}

    # Central DP: each client clips its update (norm 10 (p + 1)) to clip * E, so each round the
    # weighted mean is clip * E exactly, plus Gaussian noise of std z * clip / nodes
    # (McMahan et al., 2018, DP-FedAvg with fixed clipping); the rounds' noises add up.
    central = DifferentialPrivacyClientSideFixedClipping(FedAvg(**sizes), z, clip, nodes)
    central.summary()
    result = central.start(grid, ArrayRecord([np.zeros(DIM)]), rounds)
    (x,) = result.arrays.to_numpy_ndarrays()
    check_noise("central DP", x - rounds * clip * E, math.sqrt(rounds) * z * clip / nodes)
    epsilon = check_accountant(rounds, z, nodes)

    # Local DP: each client clips its update to LOCAL_DP's norm and adds Gaussian noise of std
    # s = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon (Dwork and Roth, 2014, Theorem A.1);
    # FedAvg's mean with weights 10, 20, 30 scales it by sqrt(10^2 + 20^2 + 30^2) / 60.
    result = FedAvg(**sizes).start(grid, ArrayRecord([np.zeros(DIM)]), 1)
    (x,) = result.arrays.to_numpy_ndarrays()
    s = LOCAL_DP["sensitivity"] * math.sqrt(2 * math.log(1.25 / LOCAL_DP["delta"]))
    s /= LOCAL_DP["epsilon"]
    weights = [10 * (p + 1) for p in range(nodes)]
    std = s * math.sqrt(sum(w * w for w in weights)) / sum(weights)
    check_noise("local DP", x - LOCAL_DP["clipping_norm"] * E, std)

    print(f"compat-dp: PASS central rounds={rounds} epsilon={epsilon:.3f} local std={std:.4f}")
