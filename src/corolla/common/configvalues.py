"""User config (run config, node config, federation options) to and from protobuf.

A user config holds plain values only (int, float, str, bool), so it needs none of the record
machinery (nor NumPy): the ``flwr`` CLI and the daemons convert it here, and
`corolla.records.serde` re-exports these for the rest. The encoding is a
``corolla.proto.v1.ConfigRecord``, as a `ConfigRecord` of the same values would be encoded.
"""

from __future__ import annotations

from collections.abc import Mapping

from corolla.common.errors import InvalidArgument
from corolla.proto.v1 import records_pb2 as rpb

ConfigValue = int | float | str | bool
_FIELDS: dict[type, str] = {bool: "bool", int: "sint", float: "double", str: "string"}


def user_config_to_proto(config: Mapping[str, ConfigValue]) -> rpb.ConfigRecord:
    out = rpb.ConfigRecord()
    for key, value in config.items():
        field = _FIELDS.get(type(value))
        if not isinstance(key, str) or field is None:
            raise InvalidArgument(
                f"config key {key!r}: only str keys and int, float, str, bool values allowed, "
                f"not {type(value).__name__}"
            )
        item = out.items.add()
        item.key = key
        setattr(item.value, field, value)
    return out


def user_config_from_proto(proto: rpb.ConfigRecord) -> dict[str, ConfigValue]:
    config: dict[str, ConfigValue] = {}
    for item in proto.items:
        kind = item.value.WhichOneof("kind")
        if kind is None or kind not in _FIELDS.values():
            raise InvalidArgument(f"config key {item.key!r}: only int, float, str, bool allowed")
        config[item.key] = getattr(item.value, kind)
    return config
