"""`FedXgbBagging`: federated XGBoost by bagging, each round's new trees added to one model.

A model travels as the bytes of XGBoost's JSON model format in one uint8 `Array` (what
``booster.save_raw("json")`` gives). This module edits that JSON directly and never imports
xgboost: the merged model is a valid model for ``xgboost.Booster(model_file=bytearray(...))``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedmedian import reply_arrays, train_metrics, usable_replies

log = logging.getLogger(__name__)

Model = dict[str, Any]  # a parsed XGBoost JSON model


class FedXgbBagging(FedAvg):
    """Bagging of XGBoost trees: the global model grows by every tree the sampled nodes add.

    Each round sends the global model (one uint8 array; empty in the first round) as
    `FedAvg` does. Each node boosts on its data and replies with the trees it added (Flower's
    convention: the whole model when it started from an empty one, else only the new
    iterations, e.g. ``booster[n - k : n]``). The new global model is the sent one with the
    trees of every reply appended, reply after reply in node-id order, iteration boundaries
    and per-tree class kept; if the sent model is empty, the first reply's model is the base.
    So ``k`` replies of ``t`` trees each add ``k * t`` trees. Replies must hold one 1-D uint8
    array of a gbtree model with the sent model's features, classes and objective.
    ``current_bst`` holds the bytes of the latest global model. Metrics are `FedAvg`'s.
    """

    current_bst: bytes | None = None
    _expected: dict[str, Any] | None = None  # what the replies must share with current_bst

    def summary(self) -> None:
        """FedAvg's settings, then how the models are merged."""
        super().summary()
        log.info("  FedXgbBagging: the trees of each train reply are added to the global model")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; the model sent is kept as ``current_bst``."""
        self.current_bst = model_bytes(arrays)
        self._expected = _shared(load_model(self.current_bst)) if self.current_bst else None
        return super().configure_train(server_round, arrays, config, grid)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """A train reply needs one XGBoost gbtree model that fits the model sent, and a
        usable ``weighted_by_key`` metric."""
        received = reply.content.get(self.arrayrecord_key)
        if not isinstance(received, ArrayRecord):
            return f"the reply has no ArrayRecord {self.arrayrecord_key!r}"
        try:
            shared = _shared(load_model(model_bytes(received)))
            if self._expected is not None:
                _check_shared(self._expected, shared)
        except InvalidArgument as exc:
            return f"not a usable XGBoost model: {exc}"
        return self.check_evaluate_reply(reply)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The global model with the replies' trees appended, and the replies' metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        records = reply_arrays(held, self.arrayrecord_key)
        models = [
            (reply.metadata.src_node_id, load_model(model_bytes(record)))
            for reply, record in zip(held, records, strict=True)
        ]
        added = sum(tree_count(model) for _, model in models)
        if self.current_bst:
            merged = load_model(self.current_bst)
        else:  # the first round: the first reply's model is the base
            (_, merged), models = models[0], models[1:]
        for node_id, model in models:
            try:
                append_trees(merged, model)
            except InvalidArgument as exc:
                raise InvalidArgument(f"node {node_id}'s model cannot be merged: {exc}") from exc
        self.current_bst = dump_model(merged)
        log.info(
            "[ROUND %d] FedXgbBagging: %d trees (%d added by %d replies)",
            server_round,
            tree_count(merged),
            added,
            len(held),
        )
        arrays = ArrayRecord([np.frombuffer(self.current_bst, dtype=np.uint8)])
        return arrays, train_metrics(self, held)


def aggregate_bagging(bst_prev_org: bytes, bst_curr_org: bytes) -> bytes:
    """The JSON model ``bst_prev_org`` with every tree of ``bst_curr_org`` appended (or
    ``bst_curr_org`` itself if the first is empty)."""
    if not bst_prev_org:
        return bytes(bst_curr_org)
    merged = load_model(bst_prev_org)
    append_trees(merged, load_model(bst_curr_org))
    return dump_model(merged)


def model_bytes(arrays: ArrayRecord) -> bytes:
    """The model bytes in ``arrays``: its only array, 1-D uint8."""
    if len(arrays) != 1:
        raise InvalidArgument(f"expected one array (the model's bytes), got {len(arrays)}")
    (array,) = arrays.values()
    if array.dtype != "uint8" or len(array.shape) != 1:
        raise InvalidArgument(
            f"expected a 1-D uint8 array of model bytes, got {array.dtype} of shape {array.shape}"
        )
    return array.view().tobytes()


def load_model(raw: bytes) -> Model:
    """Parse XGBoost JSON model bytes, checking the parts bagging relies on."""
    try:
        model = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"not JSON ({exc})") from exc
    if not isinstance(model, dict):
        raise InvalidArgument("not an XGBoost JSON model (not a JSON object)")
    _trees_part(model)
    return model


def dump_model(model: Model) -> bytes:
    return json.dumps(model, separators=(",", ":")).encode()


def tree_count(model: Model) -> int:
    return len(_trees_part(model)["trees"])


def append_trees(model: Model, other: Model) -> None:
    """Add every tree of ``other`` to ``model`` (in place), after its own."""
    _check_shared(_shared(model), _shared(other))
    trees, new = _trees_part(model), _trees_part(other)
    offset, end = len(trees["trees"]), trees["iteration_indptr"][-1]
    trees["trees"].extend({**tree, "id": offset + i} for i, tree in enumerate(new["trees"]))
    trees["tree_info"].extend(new["tree_info"])
    trees["iteration_indptr"].extend(end + bound for bound in new["iteration_indptr"][1:])
    trees["gbtree_model_param"]["num_trees"] = str(len(trees["trees"]))


def _trees_part(model: Model) -> dict[str, Any]:
    """The gbtree model of ``model`` (trees, their classes and iteration boundaries)."""
    try:
        booster = model["learner"]["gradient_booster"]
        name = booster["name"]
    except (KeyError, TypeError) as exc:
        raise InvalidArgument("not an XGBoost JSON model (no learner.gradient_booster)") from exc
    if name != "gbtree":
        raise InvalidArgument(f"only gbtree boosters can be bagged, not {name!r}")
    try:
        trees: dict[str, Any] = booster["model"]
        count = int(trees["gbtree_model_param"]["num_trees"])
        bounds = trees["iteration_indptr"]
        consistent = len(trees["trees"]) == len(trees["tree_info"]) == count == bounds[-1]
        consistent = consistent and bounds[0] == 0 and all(isinstance(b, int) for b in bounds)
        consistent = consistent and all(isinstance(tree, dict) for tree in trees["trees"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidArgument(f"not an XGBoost gbtree model (bad or missing part: {exc})") from exc
    if not consistent:
        raise InvalidArgument("its tree count, tree classes and iteration bounds disagree")
    return trees


def _shared(model: Model) -> dict[str, Any]:
    """What another model must share with ``model`` for their trees to be combined."""
    trees = _trees_part(model)
    learner = model["learner"]
    try:
        params = learner.get("learner_model_param", {})
        return {
            "num_feature": params.get("num_feature"),
            "num_class": params.get("num_class"),
            "num_target": params.get("num_target"),
            "num_parallel_tree": trees["gbtree_model_param"].get("num_parallel_tree"),
            "objective": learner.get("objective", {}).get("name"),
            "feature names and types": (learner.get("feature_names"), learner.get("feature_types")),
            "categories": trees.get("cats"),
        }
    except AttributeError as exc:  # a part that should be a JSON object is not
        raise InvalidArgument(f"not an XGBoost JSON model ({exc})") from exc


def _check_shared(expected: dict[str, Any], got: dict[str, Any]) -> None:
    for key, value in expected.items():
        if got[key] == value:
            continue
        if key.startswith("num_") or key == "objective":
            raise InvalidArgument(f"its {key} is {got[key]!r}, the global model's {value!r}")
        raise InvalidArgument(f"its {key} differ from the global model's")
