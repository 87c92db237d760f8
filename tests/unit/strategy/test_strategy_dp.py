"""The four DP wrappers: clipping, noise, adaptive norm, accounting, delegation, checkpoints."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from corolla.clientapp.mod._typing import Mod
from corolla.common.errors import InvalidArgument, RoundFailed
from corolla.serverapp.privacy import (
    NeighboringRelation,
    PrivacyBudgetExhausted,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from corolla.serverapp.strategy import FedAvg, Result, Strategy
from corolla.serverapp.strategy._dp import adaptive_noise_params
from corolla.serverapp.strategy.dp_adaptive_clipping import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
)
from corolla.serverapp.strategy.dp_fixed_clipping import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)

Updates = Callable[[int, int], np.ndarray]  # (node id, round) -> the node's update

# node 1's update has norm 5, node 2's norm 0.5
TWO_UPDATES = {1: np.array([3.0, 4.0]), 2: np.array([0.3, 0.4])}


def fixed(node_id: int, server_round: int) -> np.ndarray:
    return TWO_UPDATES[node_id]


def make_app(
    updates: Updates = fixed,
    mods: list[Mod] | None = None,
    seen: list[Message] | None = None,
    weight: Callable[[int], int] = lambda node_id: 1,
) -> ClientApp:
    """Each node replies with the arrays it got plus its update (every array), weight 1."""
    app = ClientApp(mods=mods or [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if seen is not None:
            seen.append(msg)
        server_round = int(msg.content["config"]["server-round"])
        sent = msg.content["arrays"]
        update = updates(context.node_id, server_round)
        arrays = {k: sent[k].numpy() + update for k in sent}
        metrics = MetricRecord({"num-examples": weight(context.node_id)})
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "m": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"acc": 0.5 * context.node_id, "num-examples": 1})
        return Message(RecordDict({"m": metrics}), reply_to=msg)

    return app


def fedavg() -> FedAvg:
    return FedAvg(fraction_evaluate=0.0)


def zeros(n: int = 2) -> ArrayRecord:
    return ArrayRecord({"w": np.zeros(n)})


def run(strategy: Strategy, app: ClientApp, rounds: int = 1, n: int = 2) -> Result:
    """``rounds`` rounds on two in-process nodes, from ``n`` zeros, timeout 7 s."""
    grid = InProcessGrid(app, num_nodes=2)
    return strategy.start(grid=grid, initial_arrays=zeros(n), num_rounds=rounds, timeout=7)


# -- fixed clipping -------------------------------------------------------------------------------


def test_server_side_clips_each_update_before_averaging() -> None:
    # clipped to 1: node 1 (3, 4) -> (0.6, 0.8); node 2 (0.3, 0.4) stays; mean (0.45, 0.6)
    strategy = DifferentialPrivacyServerSideFixedClipping(fedavg(), 0.0, 1.0, 2)
    result = run(strategy, make_app())
    np.testing.assert_allclose(result.arrays["w"].numpy(), [0.45, 0.6], rtol=1e-12)


def test_client_side_sends_the_norm_and_the_mod_clips() -> None:
    seen: list[Message] = []
    strategy = DifferentialPrivacyClientSideFixedClipping(fedavg(), 0.0, 1.0, 2)
    result = run(strategy, make_app(mods=[fixedclipping_mod], seen=seen))
    assert [m.content["config"]["clipping_norm"] for m in seen] == [1.0, 1.0]
    np.testing.assert_allclose(result.arrays["w"].numpy(), [0.45, 0.6], rtol=1e-12)


@pytest.mark.parametrize(
    "wrapper",
    [DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyClientSideFixedClipping],
)
def test_fixed_noise_has_std_z_times_norm_over_clients(wrapper: type) -> None:
    # z = 1.5, C = 2, 2 clients: std = 1.5 * 2 / 2 = 1.5. Updates are zero, so the new arrays
    # are the noise alone: 40000 draws, sample std within 3% (its standard error is
    # 1/sqrt(2 * 40000) = 0.35%), the same draws every run (seeded).
    strategy = wrapper(fedavg(), 1.5, 2.0, 2)
    strategy.rng = np.random.default_rng(5)
    client_side = wrapper is DifferentialPrivacyClientSideFixedClipping
    app = make_app(lambda node, rnd: np.zeros(1), mods=[fixedclipping_mod] if client_side else [])
    result = run(strategy, app, n=40_000)
    noise = result.arrays["w"].numpy()
    assert noise.std() == pytest.approx(1.5, rel=0.03)
    assert abs(noise.mean()) < 5 * 1.5 / math.sqrt(40_000)


def test_configure_and_aggregate_evaluate_are_the_wrapped_strategys() -> None:
    seen: list[Message] = []
    inner = FedAvg()
    strategy = DifferentialPrivacyServerSideFixedClipping(inner, 0.0, 1.0, 2)
    result = run(strategy, make_app(seen=seen), rounds=2)
    # FedAvg's evaluate phase ran: the mean of 0.5 and 1.0, weights 1 and 1
    assert result.evaluate_metrics_clientapp[2]["acc"] == pytest.approx(0.75)
    # FedAvg sampled with the timeout given to start (7 s), not its default of an hour
    assert all(m.metadata.ttl <= 7 for m in seen)
    assert repr(strategy) == "Differential Privacy Strategy Wrapper (Server-Side Fixed Clipping)"


def test_a_reply_the_wrapped_strategy_refuses_is_left_out() -> None:
    def bad(node_id: int, server_round: int) -> np.ndarray:
        return np.zeros(3) if node_id == 2 else TWO_UPDATES[1]  # node 2 changes the shape

    strategy = DifferentialPrivacyServerSideFixedClipping(fedavg(), 0.0, 1.0, 2)
    result = run(strategy, make_app(bad))
    np.testing.assert_allclose(result.arrays["w"].numpy(), [0.6, 0.8], rtol=1e-12)


def test_summary_logs_the_dp_settings_then_the_wrapped_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = DifferentialPrivacyClientSideFixedClipping(fedavg(), 1.1, 0.7, 5)
    with caplog.at_level(logging.INFO, logger="corolla"):
        strategy.summary()
    assert "noise multiplier 1.1, clipping norm 0.7" in caplog.text
    assert "sampling: fraction train 1" in caplog.text  # FedAvg's own summary


def test_fixed_clipping_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        DifferentialPrivacyServerSideFixedClipping(fedavg(), -1.0, 1.0, 2)
    with pytest.raises(ValueError, match="clipping_norm"):
        DifferentialPrivacyServerSideFixedClipping(fedavg(), 1.0, 0.0, 2)
    with pytest.raises(ValueError, match="num_sampled_clients"):
        DifferentialPrivacyClientSideFixedClipping(fedavg(), 1.0, 1.0, 0)


# -- accounting -----------------------------------------------------------------------------------


def accountant(
    max_epsilon: float | None = None, sampling: SamplingMethod = SamplingMethod.NO_AMPLIFICATION
) -> RdpAccountant:
    cfg = PrivacyConfig(
        target_delta=1e-5,
        population_size=2,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=sampling,
        max_epsilon=max_epsilon,
    )
    return RdpAccountant(cfg, orders=(8.0,))


def test_the_run_stops_before_a_release_would_exceed_the_budget() -> None:
    # sigma = 2 at order 8: each release costs RDP 8 / 8 = 1; after T releases
    # eps = T + log(7/8) - log(8e-5) / 7 = T + 1.2141094. With max_epsilon 3.5, rounds 1 and 2
    # are released (eps 3.2141094) and round 3 would exceed it (4.2141094).
    acc = accountant(max_epsilon=3.5)
    strategy = DifferentialPrivacyServerSideFixedClipping(fedavg(), 2.0, 1.0, 2, accountant=acc)
    with pytest.raises(PrivacyBudgetExhausted, match="round 3"):
        run(strategy, make_app(), rounds=5)
    assert acc.num_releases == 2
    spent = strategy.privacy_spent()
    assert spent is not None and spent.epsilon == pytest.approx(3.2141094, rel=1e-7)


def test_accounting_needs_equal_weights() -> None:
    strategy = DifferentialPrivacyServerSideFixedClipping(
        fedavg(), 2.0, 1.0, 2, accountant=accountant()
    )
    with pytest.raises(InvalidArgument, match="equal"):
        run(strategy, make_app(weight=lambda node_id: node_id))


def test_accounting_needs_no_amplification_and_fedavgs_mean() -> None:
    with pytest.raises(ValueError, match="NO_AMPLIFICATION"):
        DifferentialPrivacyServerSideFixedClipping(
            fedavg(), 1.0, 1.0, 2, accountant=accountant(sampling=SamplingMethod.POISSON)
        )

    class Median(FedAvg):
        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            return super().aggregate_train(server_round, replies)

    with pytest.raises(ValueError, match="aggregate_train"):
        DifferentialPrivacyClientSideFixedClipping(Median(), 1.0, 1.0, 2, accountant=accountant())


def test_the_accountant_goes_with_the_checkpoint() -> None:
    first = DifferentialPrivacyClientSideFixedClipping(
        fedavg(), 2.0, 1.0, 2, accountant=accountant()
    )
    run(first, make_app(mods=[fixedclipping_mod]), rounds=2)
    state = first.checkpoint_state()
    second = DifferentialPrivacyClientSideFixedClipping(
        fedavg(), 2.0, 1.0, 2, accountant=accountant()
    )
    second.restore_checkpoint_state(state)
    assert second.accountant is not None and second.accountant.num_releases == 2
    assert second.privacy_spent() == first.privacy_spent()


# -- adaptive clipping ----------------------------------------------------------------------------


def test_server_side_adaptive_clips_and_moves_the_norm_geometrically() -> None:
    # C = 0.1: both updates are clipped, to (0.06, 0.08) each; the clipped fraction is 1 (no
    # count noise: noise_multiplier 0), so C <- 0.1 * exp(0.2 * (1 - 0.5)) = 0.1 * e^0.1
    strategy = DifferentialPrivacyServerSideAdaptiveClipping(fedavg(), 0.0, 2)
    result = run(strategy, make_app())
    np.testing.assert_allclose(result.arrays["w"].numpy(), [0.06, 0.08], rtol=1e-12)
    assert strategy.clipping_norm == pytest.approx(0.1 * math.exp(0.1), rel=1e-12)


def test_adaptive_noise_is_calibrated_to_the_norm_the_round_clipped_to() -> None:
    # z = 0.5 with a count stddev of 5: the updates get z' = (0.5^-2 - 10^-2)^-1/2 = 0.5006262
    # times C / m = 0.1 / 2 (C before this round's adaptation), std 0.0250313.
    strategy = DifferentialPrivacyServerSideAdaptiveClipping(
        fedavg(), 0.5, 2, clipped_count_stddev=5.0
    )
    assert strategy.noise_multiplier == pytest.approx(0.5006262, rel=1e-6)
    strategy.rng = np.random.default_rng(11)
    result = run(strategy, make_app(lambda node, rnd: np.zeros(1)), n=40_000)
    assert result.arrays["w"].numpy().std() == pytest.approx(0.0250313, rel=0.03)


def test_client_side_adaptive_sends_the_current_norm_and_reads_the_bits() -> None:
    seen: list[Message] = []
    strategy = DifferentialPrivacyClientSideAdaptiveClipping(fedavg(), 0.0, 2, 1.0)
    run(strategy, make_app(mods=[adaptiveclipping_mod], seen=seen), rounds=2)
    # round 1 at C = 1: node 1 clipped, node 2 not: fraction 0.5 = target, C stays 1.
    # round 2 at C = 1 again.
    assert [m.content["config"]["clipping_norm"] for m in seen] == [1.0] * 4
    assert strategy.clipping_norm == 1.0
    assert repr(strategy) == "Differential Privacy Strategy Wrapper (Client-Side Adaptive Clipping)"


def test_client_side_adaptive_refuses_replies_without_a_norm_bit() -> None:
    strategy = DifferentialPrivacyClientSideAdaptiveClipping(fedavg(), 0.0, 2)
    with pytest.raises(RoundFailed, match="norm_bit"):
        run(strategy, make_app())  # no adaptiveclipping_mod on the clients


def _train_reply(sent: ArrayRecord, update: float) -> Message:
    msg = Message(
        RecordDict({"arrays": sent, "config": ConfigRecord()}), dst_node_id=1, message_type="train"
    )
    arrays = ArrayRecord({"w": sent["w"].numpy() + np.array([update])})
    metrics = MetricRecord({"num-examples": 1})
    return Message(RecordDict({"arrays": arrays, "m": metrics}), reply_to=msg)


@settings(max_examples=30, deadline=None)
@given(
    clipped=st.integers(1, 4),
    base=st.floats(0.01, 100.0),
    start=st.floats(1e-3, 1e3),
)
def test_the_norm_settles_where_the_target_fraction_is_clipped(
    clipped: int, base: float, start: float
) -> None:
    # five updates of norms base * 3^k; target: clip `clipped` of them. Each step changes C by
    # at most exp(0.5 * 0.8) < 3, so it cannot jump over the interval where exactly that many
    # norms exceed C, and it stops there (the clipped fraction equals the target).
    norms = [base * 3.0**k for k in range(5)]
    strategy = DifferentialPrivacyServerSideAdaptiveClipping(
        fedavg(), 0.0, 5, start, clipped / 5, 0.5
    )
    sent = ArrayRecord({"w": np.zeros(1)})
    for server_round in range(1, 120):
        strategy.current_arrays = sent
        strategy.aggregate_train(server_round, [_train_reply(sent, n) for n in norms])
    low, high = norms[4 - clipped], norms[5 - clipped]
    assert low <= strategy.clipping_norm < high


def test_adaptive_noise_parameters() -> None:
    # 20 clients: count stddev 20 / 20 = 1; z' = (0.5^-2 - 2^-2)^-1/2 = 3.75^-1/2 = 0.5163978
    stddev, z = adaptive_noise_params(0.5, 20, None)
    assert stddev == 1.0 and z == pytest.approx(0.5163978, rel=1e-7)
    assert adaptive_noise_params(0.0, 20, None) == (0.0, 0.0)
    with pytest.raises(ValueError, match="clipped_count_stddev"):
        adaptive_noise_params(1.0, 10, None)  # needs 2 * 0.5 > 1
    with pytest.raises(ValueError, match="target_clipped_quantile"):
        DifferentialPrivacyServerSideAdaptiveClipping(fedavg(), 0.0, 2, 0.1, 1.5)


def test_the_adapted_norm_survives_a_restart_from_a_checkpoint() -> None:
    # Run 1 adapts C over two rounds, then its clients fail in round 3; run 2 (a restart with
    # run 1's checkpoint) must send round 3 the norm run 1 had reached, not the initial one.
    def updates(node_id: int, server_round: int) -> np.ndarray:
        if server_round == 3:
            raise RuntimeError("node down")
        return TWO_UPDATES[node_id]

    first = DifferentialPrivacyClientSideAdaptiveClipping(fedavg(), 0.0, 2, 0.1)
    grid = InProcessGrid(make_app(updates, mods=[adaptiveclipping_mod]), num_nodes=2)
    with pytest.raises(RoundFailed):
        first.start(grid=grid, initial_arrays=zeros(), num_rounds=3, timeout=7)
    reached = first.clipping_norm  # 0.1 * e^0.1 * e^0.1: both clipped twice
    assert reached == pytest.approx(0.1 * math.exp(0.2), rel=1e-12)
    checkpoint = grid.saved_checkpoint
    assert checkpoint is not None and checkpoint[0] == 2

    seen: list[Message] = []
    second = DifferentialPrivacyClientSideAdaptiveClipping(fedavg(), 0.0, 2, 0.1)
    restarted = InProcessGrid(
        make_app(mods=[adaptiveclipping_mod], seen=seen), num_nodes=2, checkpoint=checkpoint
    )
    second.start(grid=restarted, initial_arrays=zeros(), num_rounds=3, timeout=7)
    assert [m.content["config"]["clipping_norm"] for m in seen] == pytest.approx([reached] * 2)
