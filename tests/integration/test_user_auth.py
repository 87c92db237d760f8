"""User login end to end: a real OpenID Connect provider (npm `oidc-provider`, tests/oidc), a
SuperLink with ``--user-auth-config`` and TLS, and the ``flwr`` CLI run like a user.

The test plays the user at the provider: it reads the verification address `flwr login`
prints and approves it over HTTP (`oidc_provider.approve`). Tokens are validated by the
SuperLink against the provider's real keys; the crafted tokens (expired, wrong audience, ...)
are signed with the provider's own key or a foreign one.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from integration_helpers import APPS, FLWR, started_run_id
from oidc_provider import CLI_CLIENT_ID, OidcProvider, approve, new_keys, sign

from corolla.cli.credentials import credentials_path, load_tokens, save_tokens
from corolla.cli.exec_client import ExecClient
from corolla.common.errors import Unauthenticated
from corolla.deploy.local import LocalFederation, app_for_federation
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink
from corolla.superlink.userauth import load_user_auth_config

pytestmark = pytest.mark.timeout(240)

LOGIN_TIMEOUT = 60.0
NOT_LOGGED_IN = 5  # flwr's exit code: not logged in, or not allowed
AUTH_CONFIG = """\
issuer = "{issuer}"
client-id = "flwr-cli"
audience = "corolla-exec"
scopes = ["openid", "offline_access"]
user-claim = "sub"
roles-claim = "groups"
leeway = 5

[roles]
admin = ["admin"]
user = ["researcher"]
read-only = ["viewer"]
"""


@dataclass
class Fed:
    federation: LocalFederation
    app: Path
    workdir: Path
    oidc: OidcProvider

    def home(self, user: str) -> Path:
        return self.workdir / f"home-{user}"

    def env(self, user: str) -> dict[str, str]:
        return {**self.federation.env, "FLWR_HOME": str(self.home(user))}

    def flwr(self, user: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLWR), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(user),
            check=False,
        )

    def credentials(self, user: str) -> Path:
        """Where `flwr login` keeps ``user``'s tokens (their FLWR_HOME)."""
        name = credentials_path("local", self.federation.exec).name
        return self.home(user) / "credentials" / name

    def login(self, user: str) -> str:
        """`flwr login` as ``user``: approve the printed address; returns its output."""
        return login_as(user, [str(FLWR), "login", str(self.app), "local"], self.env(user))

    def runs(self, user: str) -> list[dict[str, object]]:
        result = self.flwr(user, "ls", str(self.app), "local", "--format", "json")
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    def submit(self, user: str) -> int:
        result = self.flwr(user, "run", str(self.app), "local", "--run-config", "sleep=600.0")
        assert result.returncode == 0, result.stderr
        return started_run_id(result.stdout)


def login_as(user: str, command: list[str], env: dict[str, str]) -> str:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + LOGIN_TIMEOUT
        url = None
        while url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"flwr login ended early: {''.join(seen)}"
            seen.append(line)
            match = re.search(r"open (\S+user_code=\S+?),? ", line)
            url = match.group(1) if match else None
        approve(url, user)
        process.wait(timeout=LOGIN_TIMEOUT)
        reader.join(timeout=10)
        while (line := lines.get_nowait()) is not None:
            seen.append(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.stderr is not None
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.returncode == 0, f"{''.join(seen)}\n{stderr}"
    return "".join(seen)


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    with OidcProvider().start() as provider:
        yield provider


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, oidc: OidcProvider) -> Iterator[Fed]:
    workdir = tmp_path_factory.mktemp("user-auth")
    config = workdir / "user-auth.toml"
    config.write_text(AUTH_CONFIG.format(issuer=oidc.issuer))
    federation = LocalFederation(
        workdir / "fed", num_nodes=0, tls=True, superlink_args=["--user-auth-config", str(config)]
    )
    (workdir / "fed").mkdir()
    with federation:
        app = app_for_federation(
            APPS / "waiter",
            workdir / "app",
            federation.exec,
            settings=federation.federation_settings(),
        )
        yield Fed(federation, app, workdir, oidc)


@pytest.fixture(scope="module")
def logged_in(fed: Fed) -> Fed:
    for user in ("alice", "bob", "carol", "dave"):
        fed.login(user)
    return fed


def test_flwr_login_runs_the_device_flow_and_keeps_the_tokens_private(fed: Fed) -> None:
    output = fed.login("erin")
    assert "enter the code" in output
    assert "Logged in to federation 'local' as erin" in output
    path = fed.credentials("erin")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    tokens = load_tokens(path)
    assert tokens is not None and tokens.refresh_token
    assert tokens.access_token not in output
    # erin has no group the SuperLink maps to a role: logged in, but allowed nothing
    result = fed.flwr("erin", "ls", str(fed.app), "local")
    assert result.returncode == NOT_LOGGED_IN
    assert "permission denied" in result.stderr and "no role" in result.stderr


def test_a_command_without_a_login_says_so_in_one_line(fed: Fed) -> None:
    result = fed.flwr("nobody", "ls", str(fed.app), "local")
    assert result.returncode == NOT_LOGGED_IN
    assert result.stderr.count("\n") == 1, result.stderr
    assert "not logged in to federation 'local'" in result.stderr
    assert "flwr login" in result.stderr


def test_runs_belong_to_their_owner_and_admins_see_all(logged_in: Fed) -> None:
    fed, app = logged_in, str(logged_in.app)
    run_id = fed.submit("alice")
    mine = [run for run in fed.runs("alice") if run["run_id"] == run_id]
    assert mine and mine[0]["owner"] == "alice"
    table = fed.flwr("alice", "ls", app, "local")
    assert "alice" in table.stdout

    # another user: cannot see it, read its log or stop it
    assert run_id not in [run["run_id"] for run in fed.runs("bob")]
    for args in (
        ("stop", str(run_id), app, "local"),
        ("log", str(run_id), app, "local"),
        ("ls", app, "local", "--run-id", str(run_id)),
    ):
        denied = fed.flwr("bob", *args)
        assert denied.returncode == NOT_LOGGED_IN, (args, denied.stderr)
        assert "permission denied" in denied.stderr and "another user" in denied.stderr

    # read-only: sees every run and its log, stops nothing, starts nothing
    assert run_id in [run["run_id"] for run in fed.runs("dave")]
    assert fed.flwr("dave", "log", str(run_id), app, "local").returncode == 0
    refused = fed.flwr("dave", "stop", str(run_id), app, "local")
    assert refused.returncode == NOT_LOGGED_IN and "needs the role" in refused.stderr
    refused = fed.flwr("dave", "run", app, "local")
    assert refused.returncode == NOT_LOGGED_IN and "StartRun needs the role" in refused.stderr

    # the owner stops it; an admin stops another user's run
    assert fed.flwr("alice", "stop", str(run_id), app, "local").returncode == 0
    other = fed.submit("bob")
    assert other in [run["run_id"] for run in fed.runs("carol")]
    stopped = fed.flwr("carol", "stop", str(other), app, "local")
    assert stopped.returncode == 0, stopped.stderr
    status = next(run for run in fed.runs("bob") if run["run_id"] == other)
    assert status["sub_status"] == "stopped"


def test_only_an_admin_manages_supernodes(logged_in: Fed, tmp_path: Path) -> None:
    fed, app = logged_in, str(logged_in.app)
    key = tmp_path / "node.key"
    assert fed.flwr("alice", "supernode", "keygen", str(key)).returncode == 0
    public = str(key) + ".pub"
    refused = fed.flwr("alice", "supernode", "register", public, app, "local")
    assert refused.returncode == NOT_LOGGED_IN and "needs the role admin" in refused.stderr
    registered = fed.flwr("carol", "supernode", "register", public, app, "local")
    assert registered.returncode == 0, registered.stderr
    node_id = re.search(r"registered SuperNode (\d+)", registered.stdout)
    assert node_id
    refused = fed.flwr("bob", "supernode", "unregister", node_id.group(1), app, "local")
    assert refused.returncode == NOT_LOGGED_IN
    done = fed.flwr("carol", "supernode", "unregister", node_id.group(1), app, "local")
    assert done.returncode == 0, done.stderr


def client_with(fed: Fed, token: str) -> ExecClient:
    class Static:
        def access_token(self) -> str:
            return token

        def refresh(self) -> bool:
            return False

    return fed.federation.exec_client(auth=Static())


def test_bad_tokens_are_refused(logged_in: Fed) -> None:
    fed, oidc = logged_in, logged_in.oidc
    now = int(time.time())
    good = oidc.mint(oidc.claims_for("alice"))
    with client_with(fed, good) as client:
        client.list_runs()  # a token the provider's key signed, as the provider would
    head, body, signature = good.split(".")
    forged = body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB")
    foreign = new_keys(kid=oidc.keys[0]["kid"])[0]  # another key under the provider's kid
    cases = {
        "expired": oidc.mint(
            oidc.claims_for("alice", iat=now - 7200, nbf=now - 7200, exp=now - 600)
        ),
        "not valid yet": oidc.mint(oidc.claims_for("alice", nbf=now + 600)),
        "audience": oidc.mint(oidc.claims_for("alice", aud="someone-else")),
        "issuer": oidc.mint(oidc.claims_for("alice", iss="http://127.0.0.1:1")),
        "signature": f"{head}.{forged}.{signature}",
        "foreign": sign(oidc.claims_for("carol"), foreign),
        "unknown key": sign(oidc.claims_for("carol"), new_keys(kid="stranger")[0]),
        "malformed": "not-a-jwt",
    }
    reasons = {}
    for name, token in cases.items():
        with client_with(fed, token) as client, pytest.raises(Unauthenticated) as refused:
            client.list_runs()
        reasons[name] = str(refused.value)
        assert "flwr login" in reasons[name], reasons[name]
        assert token not in reasons[name]
    assert "expired" in reasons["expired"]
    assert "not valid yet" in reasons["not valid yet"]
    assert "audience" in reasons["audience"]
    assert "issued by another provider" in reasons["issuer"]
    assert "signature" in reasons["signature"]
    assert "signature" in reasons["foreign"]
    assert "unknown key" in reasons["unknown key"]
    assert "malformed" in reasons["malformed"]


def test_an_expired_login_is_refreshed_without_the_user_noticing(logged_in: Fed) -> None:
    fed = logged_in
    path = fed.credentials("alice")
    before = load_tokens(path)
    assert before is not None
    # 1. the stored expiry has passed: the CLI refreshes before the call
    save_tokens(path, dataclasses.replace(before, expires_at=time.time() - 10))
    result = fed.flwr("alice", "ls", str(fed.app), "local")
    assert result.returncode == 0, result.stderr
    after = load_tokens(path)
    assert after is not None
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # the provider rotates refresh tokens
    assert after.expires_at > time.time() + 600
    # 2. the SuperLink refuses a token the CLI thought valid: refreshed once, call retried
    now = int(time.time())
    stale = fed.oidc.mint(fed.oidc.claims_for("alice", iat=now - 7200, exp=now - 600))
    save_tokens(path, dataclasses.replace(after, access_token=stale))
    result = fed.flwr("alice", "ls", str(fed.app), "local")
    assert result.returncode == 0, result.stderr
    final = load_tokens(path)
    assert final is not None and final.access_token not in (stale, after.access_token)


def test_logout_revokes_and_deletes(fed: Fed, oidc: OidcProvider) -> None:
    fed.login("bob")
    path = fed.credentials("bob")
    tokens = load_tokens(path)
    assert tokens is not None
    result = fed.flwr("bob", "logout", str(fed.app), "local")
    assert result.returncode == 0, result.stderr
    assert not path.exists()
    token_endpoint = oidc.discovery()["token_endpoint"]
    reply = httpx.post(
        token_endpoint,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": CLI_CLIENT_ID,
        },
        timeout=10,
    )
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"
    after = fed.flwr("bob", "ls", str(fed.app), "local")
    assert after.returncode == NOT_LOGGED_IN and "flwr login" in after.stderr
    again = fed.flwr("bob", "logout", str(fed.app), "local")
    assert again.returncode == 0 and "Not logged in" in again.stdout
    fed.login("bob")  # the other tests of this module go on as bob


def test_every_action_is_audited_and_no_token_is_kept(logged_in: Fed) -> None:
    fed, app = logged_in, str(logged_in.app)
    run_id = fed.submit("alice")
    assert fed.flwr("bob", "stop", str(run_id), app, "local").returncode == NOT_LOGGED_IN
    assert fed.flwr("alice", "stop", str(run_id), app, "local").returncode == 0
    refused = fed.flwr("alice", "audit", app, "local")
    assert refused.returncode == NOT_LOGGED_IN and "needs the role admin" in refused.stderr
    result = fed.flwr("carol", "audit", app, "local", "--run-id", str(run_id), "--format", "json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    seen = {(e["user"], e["action"], e["allowed"]) for e in events}
    assert ("alice", "StartRun", True) in seen
    assert ("bob", "StopRun", False) in seen
    assert ("alice", "StopRun", True) in seen
    assert all(e["run_id"] == run_id for e in events)
    denied = [e for e in events if not e["allowed"]]
    assert all("PermissionDenied" in e["reason"] for e in denied)
    # the SuperLink's log has one structured line per action, and neither it nor the state
    # database holds any token
    superlink = fed.federation.superlink
    assert superlink is not None
    log = superlink.output()
    audit = [
        json.loads(line.split(" audit ", 1)[1]) for line in log.splitlines() if " audit {" in line
    ]
    assert any(
        (e["user"], e["action"], e["run_id"], e["allowed"]) == ("bob", "StopRun", run_id, False)
        and "another user" in e["reason"]
        for e in audit
    )
    secrets = []
    for user in ("alice", "bob", "carol", "dave"):
        tokens = load_tokens(fed.credentials(user))
        assert tokens is not None
        secrets += [tokens.access_token, tokens.refresh_token]
    database = fed.workdir / "fed" / "state.db"
    dump = "\n".join(sqlite3.connect(database).iterdump())
    for secret in secrets:
        assert secret[-40:] not in log
        assert secret[-40:] not in dump


def test_a_rotated_signing_key_is_picked_up(tmp_path: Path) -> None:
    with OidcProvider().start() as oidc:
        config = tmp_path / "user-auth.toml"
        config.write_text(AUTH_CONFIG.format(issuer=oidc.issuer))
        link = SuperLink(
            SuperLinkConfig(
                serverappio_address="127.0.0.1:0",
                fleet_address="127.0.0.1:0",
                exec_address="127.0.0.1:0",
                user_auth=load_user_auth_config(config),
            )
        )
        link.start()
        try:
            address = link.addresses["exec"]
            federation = LocalFederation(tmp_path, num_nodes=0, exec=address)
            fed = Fed(federation, tmp_path / "app", tmp_path, oidc)
            app_for_federation(APPS / "waiter", fed.app, address)
            old = oidc.keys
            fed.login("alice")
            assert fed.flwr("alice", "ls", str(fed.app), "local").returncode == 0
            oidc.restart(keys=[*new_keys(kid="rotated", alg="ES256"), *old])  # a rollover
            fed.login("carol")  # signed by the new key, which the SuperLink has not seen yet
            tokens = load_tokens(fed.credentials("carol"))
            assert tokens is not None
            assert jwt.get_unverified_header(tokens.access_token)["kid"] == "rotated"
            result = fed.flwr("carol", "ls", str(fed.app), "local")
            assert result.returncode == 0, result.stderr
            with client_with(fed, sign(oidc.claims_for("carol"), old[0])) as client:
                client.list_runs()  # the old key stays good while the provider publishes it
        finally:
            link.stop()
