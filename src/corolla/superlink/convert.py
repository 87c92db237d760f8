"""SuperLink domain records to protobuf (the servicers' shared conversions)."""

from __future__ import annotations

from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.serde import user_config_to_proto
from corolla.superlink.state import RunRecord


def run_to_proto(run: RunRecord) -> rpb.Run:
    return rpb.Run(
        run_id=run.run_id,
        fab_id=run.fab_id,
        fab_version=run.fab_version,
        fab_hash=run.fab_hash,
        override_config=user_config_to_proto(run.override_config),
        run_config=user_config_to_proto(run.run_config),
        status=rpb.RunStatus(status=run.status, sub_status=run.sub_status, details=run.details),
        pending_at=run.pending_at,
        starting_at=run.starting_at,
        running_at=run.running_at,
        finished_at=run.finished_at,
        federation=run.federation,
        owner=run.owner,
        federation_options=user_config_to_proto(run.federation_options),
    )


def fab_to_proto(fab_hash: str, content: bytes) -> rpb.Fab:
    return rpb.Fab(hash=fab_hash, content=content)
