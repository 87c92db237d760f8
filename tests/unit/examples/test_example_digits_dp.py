"""The digits-dp example: FedAdam with `LocalDpMod` on ten in-process nodes reaches >= 0.85
centralised accuracy, and the mod really clips and noises every train reply."""

from __future__ import annotations

import importlib
import logging
import math
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from corolla.clientapp import ClientApp
from corolla.records import UserConfig
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digits-dp"
NUM_NODES = 10  # the default federation's options.num-supernodes
MOD_LOGGER = "corolla.clientapp.mod._localdp"

# The default privacy parameters, and the noise LocalDpMod must add for them (Dwork and Roth
# 2014, Theorem A.1): std = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon
#   = 0.2 * sqrt(2 * ln(125000)) / 4 = 0.2 * sqrt(2 * 11.7361) / 4 = 0.2 * 4.8448 / 4 = 0.24224
CLIPPING_NORM, SENSITIVITY, EPSILON, DELTA = 0.2, 0.2, 4.0, 1e-5
NOISE_STD = 0.24224


@pytest.fixture(scope="module")
def example() -> Iterator[dict[str, ModuleType]]:
    """The example's modules, imported the way the runtime would: from the app's directory."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield {
            name: importlib.import_module(f"digits_dp.{name}")
            for name in ("task", "client_app", "server_app")
        }
    finally:
        sys.path.remove(str(EXAMPLE))


def default_run_config() -> UserConfig:
    with (EXAMPLE / "pyproject.toml").open("rb") as f:
        config: UserConfig = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    return config


def grid_of(client_app: ClientApp, run_config: UserConfig) -> InProcessGrid:
    """Ten in-process nodes with the node configs the simulation gives its virtual nodes."""
    return InProcessGrid(
        client_app,
        num_nodes=NUM_NODES,
        node_configs={
            n + 1: {"partition-id": n, "num-partitions": NUM_NODES} for n in range(NUM_NODES)
        },
        run_config=run_config,
    )


def test_pyproject_declares_the_app_with_its_privacy_parameters() -> None:
    with (EXAMPLE / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    assert pyproject["project"]["name"] == "digits-dp"
    assert pyproject["project"]["dependencies"] == ["corolla", "scikit-learn>=1.4"]
    assert pyproject["tool"]["setuptools"]["packages"] == ["digits_dp"]
    flwr = pyproject["tool"]["flwr"]
    assert flwr["app"]["components"] == {
        "serverapp": "digits_dp.server_app:app",
        "clientapp": "digits_dp.client_app:app",
    }
    assert flwr["federations"]["default"] == "local-simulation"
    assert flwr["federations"]["local-simulation"] == {"options": {"num-supernodes": NUM_NODES}}
    config = default_run_config()
    assert set(config) == {
        "num-server-rounds",
        "fraction-train",
        "min-nodes",
        "local-epochs",
        "learning-rate",
        "server-learning-rate",
        "clipping-norm",
        "sensitivity",
        "epsilon",
        "delta",
    }
    assert (config["clipping-norm"], config["sensitivity"]) == (CLIPPING_NORM, SENSITIVITY)
    assert (config["epsilon"], config["delta"]) == (EPSILON, DELTA)


def exact_delta(epsilon: float, ratio: float) -> float:
    """The smallest delta for which Gaussian noise of ``ratio`` times the sensitivity is
    (epsilon, delta)-DP (Balle and Wang 2018, Theorem 8), with r = ratio:
    delta = Phi(1/(2r) - epsilon r) - e^epsilon Phi(-1/(2r) - epsilon r)."""

    def phi(t: float) -> float:  # the standard normal CDF
        return 0.5 * math.erfc(-t / math.sqrt(2))

    return phi(1 / (2 * ratio) - epsilon * ratio) - math.exp(epsilon) * phi(
        -1 / (2 * ratio) - epsilon * ratio
    )


def exact_epsilon(ratio: float, delta: float) -> float:
    """The epsilon at which `exact_delta` falls to ``delta`` (it decreases in epsilon)."""
    low, high = 0.0, 1000.0
    for _ in range(100):  # bisection, to well below 1e-9
        middle = (low + high) / 2
        low, high = (middle, high) if exact_delta(middle, ratio) > delta else (low, middle)
    return high


def test_the_noise_gives_the_stated_per_reply_guarantee() -> None:
    """The classic calibration is proven for epsilon < 1 only; for the example's epsilon = 4
    the exact privacy curve of the Gaussian mechanism shows it still holds."""
    ratio = NOISE_STD / SENSITIVITY  # 1.2112
    assert 0 < exact_delta(EPSILON, ratio) <= DELTA
    assert exact_delta(EPSILON, ratio / 2) > DELTA  # half the noise would not do


def test_default_run_reaches_85_percent_with_every_reply_clipped_and_noised(
    example: dict[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_config = default_run_config()
    num_rounds = int(run_config["num-server-rounds"])
    mod = example["client_app"].local_dp_mod(run_config)
    mod.rng = np.random.default_rng(2024)  # reproducible noise for the test only
    grid = grid_of(example["client_app"].app, run_config)
    context = Context(run_id=grid.run_id, node_id=0, run_config=run_config)

    with caplog.at_level(logging.INFO, logger=MOD_LOGGER):
        example["server_app"].app(grid, context)

    out = capsys.readouterr().out
    rounds = re.findall(r"^round (\d+)/(\d+): centralised accuracy ([\d.]+), loss", out, re.M)
    assert [int(r) for r, _, _ in rounds] == list(range(num_rounds + 1))
    assert float(rounds[0][2]) < 0.2  # the all-zero start predicts one class: about 1 in 10
    final = re.search(r"^final centralised accuracy: ([\d.]+)$", out, re.M)
    assert final is not None, out
    assert float(final.group(1)) >= 0.85

    # One LocalDpMod line per train reply: 10 nodes x 100 rounds, each clipped (local training
    # moves the model much further than 0.2) and noised with the std computed above.
    acted = [r.getMessage() for r in caplog.records if r.name == MOD_LOGGER]
    updates = [m for m in acted if m.startswith("LocalDpMod: update")]
    assert len(updates) == NUM_NODES * num_rounds
    assert set(updates) == {
        f"LocalDpMod: update clipped to norm {CLIPPING_NORM:.4f}, noise of std "
        f"{NOISE_STD:.4f} added"
    }

    # A node's 100 replies compose. Renyi DP (Mironov 2017): each reply is (a, a / (2 z^2))-RDP
    # with z = 1.2112, so 100 of them are (a, 100 a / (2 z^2)) = (a, 34.08 a)-RDP; the classic
    # conversion eps = min_a 34.08 a + ln(1/delta) / (a - 1) is at most (at a = 1.58)
    # 34.08 * 1.58 + 11.513 / 0.58 = 53.85 + 19.85 = 73.7; an accountant may do better, but not
    # better than exact: 100 Gaussian releases of multiplier z are one of multiplier z / 10,
    # whose exact epsilon at delta = 1e-5 (Theorem 8 again, solved for epsilon) is about 68.5.
    privacy = re.search(r"a node's (\d+) replies together: epsilon ([\d.]+)$", out, re.M)
    assert privacy is not None, out
    assert int(privacy.group(1)) == num_rounds
    exact = exact_epsilon(NOISE_STD / SENSITIVITY / math.sqrt(num_rounds), DELTA)
    assert 68 < exact < 69
    assert exact <= float(privacy.group(2)) <= 73.7


def test_local_dp_mod_clips_and_noises_what_plain_training_would_send(
    example: dict[str, ModuleType],
) -> None:
    """The same train message to the example's app and to the same handler without the mod:
    the plain reply is the training's own result; the DP reply is the arrays sent plus that
    update scaled to norm 0.2, plus independent N(0, 0.24224^2) noise on each of 650 numbers."""
    task, client_app = example["task"], example["client_app"]
    run_config = default_run_config()
    client_app.local_dp_mod(run_config).rng = np.random.default_rng(7)
    plain = ClientApp()
    plain.train()(client_app.train)

    rng = np.random.default_rng(0)
    sent = [rng.normal(0, 0.1, (64, 10)).astype(np.float32), np.zeros(10, np.float32)]
    content = RecordDict(
        {
            "arrays": ArrayRecord([a.copy() for a in sent]),
            "config": ConfigRecord({"lr": 0.5, "server-round": 3}),
        }
    )

    def reply_of(app: ClientApp) -> list[np.ndarray]:
        grid = grid_of(app, run_config)
        (reply,) = grid.send_and_receive(
            [Message(content, dst_node_id=4, message_type=MessageType.TRAIN)], timeout=10
        )
        assert not reply.has_error(), reply.error
        assert set(reply.content["metrics"]) == {"num-examples"}  # nothing un-noised leaks
        arrays: list[np.ndarray] = reply.content["arrays"].to_numpy_ndarrays()
        return arrays

    x, y = task.load_partition(3, NUM_NODES)  # node 4 holds partition 3
    # The handler seeds its shuffling with server-round * 1000 + node id = 3004.
    trained = task.train(sent, x, y, epochs=3, lr=0.5, seed=3004)
    assert all(np.array_equal(p, t) for p, t in zip(reply_of(plain), trained, strict=True))

    private = reply_of(client_app.app)
    update = [t.astype(np.float64) - s for t, s in zip(trained, sent, strict=True)]
    norm = math.sqrt(sum(float(np.sum(u * u)) for u in update))
    assert norm > 10 * CLIPPING_NORM  # so the mod had to clip
    clipped = [u * (CLIPPING_NORM / norm) for u in update]
    noise = np.concatenate(
        [(p - s - c).ravel() for p, s, c in zip(private, sent, clipped, strict=True)]
    )
    assert noise.size == 650
    # The sample std of 650 normal draws is within 3.5 standard errors (s / sqrt(2n), 2.8%)
    # of s; their mean within 3.5 s / sqrt(n).
    assert abs(noise.std() - NOISE_STD) < 3.5 * NOISE_STD / math.sqrt(2 * 650)
    assert abs(noise.mean()) < 3.5 * NOISE_STD / math.sqrt(650)
    # ... and it is independent of the update (the sample correlation of 650 independent pairs
    # is within 3.5 / sqrt(650) = 0.14 of 0; an unclipped or unnoised update would give 1).
    flat_update = np.concatenate([u.ravel() for u in update])
    assert abs(np.corrcoef(noise, flat_update)[0, 1]) < 3.5 / math.sqrt(650)
    # What reaches the server is no longer the clipped update: noise dominates it,
    # |noise| ~ 0.24224 * sqrt(650) = 6.18 against |clipped update| = 0.2.
    assert float(np.linalg.norm(noise)) > 20 * CLIPPING_NORM


def test_partitions_are_disjoint_iid_shards_of_the_train_split(
    example: dict[str, ModuleType],
) -> None:
    task = example["task"]
    x_train, _, x_test, _ = task.load_data()
    assert len(x_test) == int(0.2 * (len(x_train) + len(x_test)))
    rows: list[bytes] = []
    for partition_id in range(NUM_NODES):
        x, y = task.load_partition(partition_id, NUM_NODES)
        assert set(y.tolist()) == set(range(10))  # IID: every class on every node
        rows.extend(map(bytes, x.view(np.uint8)))
    assert sorted(rows) == sorted(map(bytes, x_train.view(np.uint8)))  # each train row once
    with pytest.raises(ValueError, match="partition-id"):
        task.load_partition(NUM_NODES, NUM_NODES)
