"""Roles, run ownership and the audit trail of the Exec API, served for real over gRPC.

Token validation itself is tested against a real identity provider (tests/integration/
test_user_auth.py) and in test_oidc_validator.py; here a table of tokens stands in for it, so
that every rule of `corolla.superlink.access` is checked on its own."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corolla.cli.exec_client import ExecClient
from corolla.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from corolla.common.grpc import bind, create_server
from corolla.common.guard import add_service
from corolla.fab import build_fab_bytes
from corolla.proto.v1 import exec_pb2
from corolla.records.serde import user_config_from_proto
from corolla.superlink.access import ExecAccess
from corolla.superlink.convert import run_to_proto
from corolla.superlink.exec import POLICY, ExecServicer
from corolla.superlink.oidc import Identity
from corolla.superlink.runs import Runs
from corolla.superlink.state import SqliteLinkState
from corolla.superlink.userauth import Role, UserAuthConfig

BAD_NUM = re.escape("'options.num-supernodes' must be an integer")

pytestmark = pytest.mark.timeout(60)

IDENTITIES = {
    "t-alice": Identity("alice", frozenset({Role.USER}), "alice", 0.0),
    "t-bob": Identity("bob", frozenset({Role.USER}), "bob", 0.0),
    "t-carol": Identity("carol", frozenset({Role.ADMIN}), "carol", 0.0),
    "t-dave": Identity("dave", frozenset({Role.READ_ONLY}), "dave", 0.0),
    "t-erin": Identity("erin", frozenset(), "erin", 0.0),
}
APP = Path(__file__).parents[2] / "integration" / "apps" / "probe"


class TableValidator:
    """Tokens are names in `IDENTITIES`; anything else is refused."""

    def validate(self, token: str) -> Identity:
        if token not in IDENTITIES:
            raise Unauthenticated("the access token is not valid")
        return IDENTITIES[token]


class Token:
    """A `TokenSource` holding fixed tokens: ``refresh`` moves on to the next one."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.refreshes = 0

    def access_token(self) -> str | None:
        return self.tokens[0] if self.tokens else None

    def refresh(self) -> bool:
        self.refreshes += 1
        if len(self.tokens) < 2:
            return False
        self.tokens.pop(0)
        return True


@dataclass
class Served:
    state: SqliteLinkState
    address: str
    run_of: dict[str, int]

    def client(self, *tokens: str) -> ExecClient:
        return ExecClient(self.address, insecure=True, auth=Token(*tokens) if tokens else None)


@contextlib.contextmanager
def serve(login: bool) -> Iterator[Served]:
    state = SqliteLinkState(":memory:")
    config = UserAuthConfig(
        issuer="http://127.0.0.1:1",
        client_id="flwr-cli",
        audience="corolla-exec",
        roles={},
    )
    access = ExecAccess(state, TableValidator() if login else None)
    servicer = ExecServicer(
        Runs(state), lambda: None, access=access, user_auth=config if login else None
    )
    server = create_server(max_workers=4)
    add_service(
        server,
        exec_pb2.DESCRIPTOR.services_by_name["Exec"],
        servicer,
        POLICY,
        access.authenticate,
    )
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    runs = {
        owner: state.create_run(
            fab_id="acme/demo",
            fab_version="1",
            fab_hash="h",
            override_config={},
            run_config={},
            owner=owner,
        )
        for owner in ("alice", "bob")
    }
    for run_id in runs.values():
        state.append_logs(run_id, [f"line of run {run_id}"])
    try:
        yield Served(state, f"127.0.0.1:{port}", runs)
    finally:
        server.stop(None).wait(5)
        state.close()


@pytest.fixture
def served() -> Iterator[Served]:
    with serve(login=True) as served:
        yield served


def listed(served: Served, token: str) -> set[int]:
    with served.client(token) as client:
        return {run.run_id for run in client.list_runs().runs}


def test_a_call_without_a_token_is_told_to_log_in(served: Served) -> None:
    with served.client() as client, pytest.raises(Unauthenticated, match="flwr login"):
        client.list_runs()
    with served.client("forged") as client, pytest.raises(Unauthenticated, match="not valid"):
        client.list_runs()


def test_login_details_need_no_token(served: Served) -> None:
    with served.client() as client:
        details = client.get_login_details()
    assert details is not None
    assert (details.issuer, details.client_id) == ("http://127.0.0.1:1", "flwr-cli")
    assert "openid" in details.scopes


def test_a_user_sees_and_stops_only_their_own_runs(served: Served) -> None:
    alice, bob = served.run_of["alice"], served.run_of["bob"]
    assert listed(served, "t-alice") == {alice}
    assert listed(served, "t-bob") == {bob}
    with served.client("t-alice") as client:
        with pytest.raises(PermissionDenied, match="another user"):
            client.list_runs(bob)
        with pytest.raises(PermissionDenied, match="another user"):
            list(client.stream_logs(bob, follow=False))
        with pytest.raises(PermissionDenied, match="another user"):
            client.stop_run(bob)
        batches = list(client.stream_logs(alice, follow=False))
        assert batches[0].lines == (f"line of run {alice}",)
        assert client.stop_run(alice)
    assert served.state.get_run(bob).status != "finished"


def test_an_admin_sees_and_stops_every_run(served: Served) -> None:
    assert listed(served, "t-carol") == set(served.run_of.values())
    with served.client("t-carol") as client:
        assert client.stop_run(served.run_of["bob"])


def test_read_only_reads_every_run_but_changes_nothing(served: Served) -> None:
    bob = served.run_of["bob"]
    assert listed(served, "t-dave") == set(served.run_of.values())
    with served.client("t-dave") as client:
        assert list(client.stream_logs(bob, follow=False))
        with pytest.raises(PermissionDenied, match="StopRun needs the role admin or user"):
            client.stop_run(bob)
        content, fab_hash = build_fab_bytes(APP)
        with pytest.raises(PermissionDenied, match="StartRun needs"):
            client.start_run(
                content, fab_hash, override_config={}, federation="", federation_options={}
            )


def test_a_user_without_a_role_may_do_nothing(served: Served) -> None:
    with served.client("t-erin") as client, pytest.raises(PermissionDenied, match="no role"):
        client.list_runs()


def test_only_admins_manage_supernodes_and_read_the_audit(served: Served) -> None:
    with served.client("t-alice") as client:
        with pytest.raises(PermissionDenied, match="needs the role admin"):
            client.unregister_node(5)
        with pytest.raises(PermissionDenied, match="needs the role admin"):
            client.list_audit()
        client.list_nodes()  # anyone with a role may see which nodes there are
    with served.client("t-carol") as client:
        assert client.list_audit()


def test_a_run_belongs_to_whoever_submitted_it(served: Served) -> None:
    content, fab_hash = build_fab_bytes(APP)
    with served.client("t-alice") as client:
        run_id = client.start_run(
            content, fab_hash, override_config={}, federation="f", federation_options={}
        )
        assert client.get_run(run_id).owner == "alice"
    assert run_id not in listed(served, "t-bob")


def test_start_run_keeps_the_federation_options_and_refuses_a_bad_simulation(
    served: Served,
) -> None:
    content, fab_hash = build_fab_bytes(APP)
    options = {"options.num-supernodes": 3, "options.backend.client-resources.num-cpus": 2}
    with served.client("t-alice") as client:
        run_id = client.start_run(
            content, fab_hash, override_config={}, federation="f", federation_options=options
        )
        with pytest.raises(InvalidArgument, match=BAD_NUM):
            client.start_run(
                content,
                fab_hash,
                override_config={},
                federation="f",
                federation_options={"options.num-supernodes": 0},
            )
    assert served.state.get_run(run_id).federation_options == options
    assert len(served.state.list_runs()) == len(served.run_of) + 1
    proto = run_to_proto(served.state.get_run(run_id))
    assert user_config_from_proto(proto.federation_options) == options


def test_an_expired_token_is_refreshed_once_and_the_call_goes_through(served: Served) -> None:
    source = Token("stale", "t-alice")
    with ExecClient(served.address, insecure=True, auth=source) as client:
        assert {r.run_id for r in client.list_runs().runs} == {served.run_of["alice"]}
    assert source.refreshes == 1
    dead = Token("stale")
    with (
        ExecClient(served.address, insecure=True, auth=dead) as client,
        pytest.raises(Unauthenticated),
    ):
        client.list_runs()
    assert dead.refreshes == 1  # tried once, then gave up


def test_every_decision_is_audited_without_tokens(served: Served) -> None:
    bob = served.run_of["bob"]
    with served.client("t-alice") as client, pytest.raises(PermissionDenied):
        client.stop_run(bob)
    with served.client("t-dave") as client, pytest.raises(PermissionDenied):
        client.stop_run(bob)
    with served.client("forged-secret") as client, pytest.raises(Unauthenticated):
        client.list_runs()
    with served.client("t-carol") as client:
        client.stop_run(bob)
        events = client.list_audit(limit=50)
    by = {(e.user, e.action, e.run_id, e.allowed) for e in events}
    assert ("alice", "StopRun", bob, False) in by
    assert ("dave", "StopRun", bob, False) in by
    assert ("", "ListRuns", 0, False) in by
    assert ("carol", "StopRun", bob, True) in by
    assert all(e.reason for e in events if not e.allowed)
    text = repr(events)
    assert "forged-secret" not in text and "t-alice" not in text
    with served.client("t-carol") as client:
        only_bob = client.list_audit(run_id=bob)
        assert only_bob and {e.run_id for e in only_bob} == {bob}
        assert {e.user for e in client.list_audit(user="dave")} == {"dave"}


def test_without_login_every_caller_may_do_everything() -> None:
    with serve(login=False) as served, served.client() as client:
        assert {r.run_id for r in client.list_runs().runs} == set(served.run_of.values())
        assert client.stop_run(served.run_of["bob"])
        assert client.get_login_details() is None
        assert client.list_audit()[0].action == "StopRun"
