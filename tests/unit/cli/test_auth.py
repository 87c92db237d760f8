"""The CLI side of user login against an identity provider played by `httpx.MockTransport`."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from corolla.cli import credentials
from corolla.cli.auth import (
    DEVICE_CODE_GRANT,
    LoginDetails,
    TokenSession,
    device_login,
    discover,
    revoke,
)
from corolla.cli.commands import login as login_command
from corolla.cli.credentials import (
    Tokens,
    credentials_path,
    delete_tokens,
    load_tokens,
    save_tokens,
)
from corolla.common import errors

ISSUER = "https://idp.example/realms/corolla"
CLIENT = "flwr-cli"
DEVICE_CODE = "device-code-SECRET"
ACCESS = "access-token-SECRET-1"
REFRESH = "refresh-token-SECRET-1"
SECRETS = (DEVICE_CODE, ACCESS, REFRESH, "access-token-SECRET-2", "refresh-token-SECRET-2")
DETAILS = LoginDetails(issuer=ISSUER, client_id=CLIENT, scopes=("openid", "profile"))
Reply = httpx.Response | Exception


@dataclass
class Provider:
    """An OpenID provider: discovery, device authorization, token and revocation endpoints.

    ``token_replies`` answer the token endpoint in turn (the last one repeats)."""

    issuer: str = ISSUER
    device_reply: dict[str, Any] = field(
        default_factory=lambda: {
            "device_code": DEVICE_CODE,
            "user_code": "WDJB-MJHT",
            "verification_uri": f"{ISSUER}/device",
            "verification_uri_complete": f"{ISSUER}/device?user_code=WDJB-MJHT",
            "expires_in": 600,
            "interval": 5,
        }
    )
    token_replies: list[Reply] = field(default_factory=list)
    revocation: bool = True
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        timeouts = request.extensions["timeout"].values()
        assert all(t is not None for t in timeouts), "every request sets its timeout"
        path = request.url.path.removeprefix("/realms/corolla")
        if path == "/.well-known/openid-configuration":
            meta = {
                "issuer": self.issuer,
                "device_authorization_endpoint": f"{ISSUER}/device/auth",
                "token_endpoint": f"{ISSUER}/token",
            }
            if self.revocation:
                meta["revocation_endpoint"] = f"{ISSUER}/revoke"
            return httpx.Response(200, json=meta)
        if path == "/device/auth":
            return httpx.Response(200, json=self.device_reply)
        if path == "/token":
            reply = (
                self.token_replies.pop(0) if len(self.token_replies) > 1 else self.token_replies[0]
            )
            if isinstance(reply, Exception):
                raise reply
            return reply
        if path == "/revoke":
            return httpx.Response(200)
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), timeout=None)

    def forms(self, path: str) -> list[dict[str, str]]:
        return [
            {k: v[0] for k, v in parse_qs(r.content.decode()).items()}
            for r in self.requests
            if r.url.path.endswith(path)
        ]


def oauth_error(error: str, description: str = "", status: int = 400) -> httpx.Response:
    body = {"error": error, **({"error_description": description} if description else {})}
    return httpx.Response(status, json=body)


def granted(access: str = ACCESS, refresh: str | None = REFRESH, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 300}
    if refresh is not None:
        body["refresh_token"] = refresh
    return httpx.Response(200, json={**body, **extra})


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def flwr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    return home


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def login(provider: Provider, fake_time: FakeTime, said: list[str] | None = None) -> Tokens:
    with provider.client() as http:
        return device_login(
            DETAILS,
            http=http,
            say=(said if said is not None else []).append,
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=lambda: 5000.0,
        )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- device flow ---------------------------------------------------------------------------------


def test_device_login_shows_the_code_and_polls_until_approved(
    provider: Provider, fake_time: FakeTime
) -> None:
    provider.token_replies = [
        oauth_error("authorization_pending"),
        oauth_error("authorization_pending"),
        granted(scope="openid profile email"),
    ]
    said: list[str] = []
    tokens = login(provider, fake_time, said)

    output = "\n".join(said)
    assert f"{ISSUER}/device" in output and "WDJB-MJHT" in output
    assert f"{ISSUER}/device?user_code=WDJB-MJHT" in output
    assert_no_secret(output)
    assert fake_time.sleeps == [5, 5, 5]
    device_form = provider.forms("/device/auth")
    assert device_form == [{"client_id": CLIENT, "scope": "openid profile"}]
    polls = provider.forms("/token")
    assert len(polls) == 3
    assert polls[0] == {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": DEVICE_CODE,
        "client_id": CLIENT,
    }
    assert tokens.access_token == ACCESS and tokens.refresh_token == REFRESH
    assert tokens.expires_at == 5300.0
    assert tokens.token_endpoint == f"{ISSUER}/token"
    assert tokens.revocation_endpoint == f"{ISSUER}/revoke"
    assert tokens.scopes == ("openid", "profile", "email")
    assert_no_secret(repr(tokens))


def test_interval_defaults_to_five_seconds(provider: Provider, fake_time: FakeTime) -> None:
    del provider.device_reply["interval"]
    provider.token_replies = [oauth_error("authorization_pending"), granted()]
    login(provider, fake_time)
    assert fake_time.sleeps == [5, 5]


def test_slow_down_adds_five_seconds_to_the_interval(
    provider: Provider, fake_time: FakeTime
) -> None:
    provider.device_reply["interval"] = 2
    provider.token_replies = [
        oauth_error("slow_down"),
        oauth_error("authorization_pending"),
        oauth_error("slow_down"),
        granted(),
    ]
    login(provider, fake_time)
    assert fake_time.sleeps == [2, 7, 7, 12]


def test_a_poll_timing_out_doubles_the_interval(provider: Provider, fake_time: FakeTime) -> None:
    provider.token_replies = [httpx.ReadTimeout("slow"), granted()]
    login(provider, fake_time)
    assert fake_time.sleeps == [5, 10]


def test_access_denied(provider: Provider, fake_time: FakeTime) -> None:
    provider.token_replies = [oauth_error("authorization_pending"), oauth_error("access_denied")]
    with pytest.raises(errors.PermissionDenied, match="refused at the identity provider") as info:
        login(provider, fake_time)
    assert_no_secret(str(info.value))


def test_the_code_expiring_by_the_clock(provider: Provider, fake_time: FakeTime) -> None:
    provider.device_reply["expires_in"] = 12
    provider.token_replies = [oauth_error("authorization_pending")]
    with pytest.raises(errors.DeadlineExceeded, match="run `flwr login` again"):
        login(provider, fake_time)
    assert fake_time.sleeps == [5, 5, 5]
    assert len(provider.forms("/token")) == 2  # no poll once the code has expired


def test_the_provider_saying_the_code_expired(provider: Provider, fake_time: FakeTime) -> None:
    provider.token_replies = [oauth_error("expired_token")]
    with pytest.raises(errors.DeadlineExceeded, match="expired before it was approved"):
        login(provider, fake_time)


def test_other_errors_quote_the_provider(provider: Provider, fake_time: FakeTime) -> None:
    provider.token_replies = [oauth_error("invalid_client", "Client\x1b[31m not\nallowed")]
    with pytest.raises(errors.FailedPrecondition) as info:
        login(provider, fake_time)
    message = str(info.value)
    assert "invalid_client: Client [31m not allowed" in message  # no escape, one line
    assert ISSUER in message
    assert_no_secret(message)


def test_device_authorization_refused(provider: Provider, fake_time: FakeTime) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/device/auth"):
            return oauth_error("invalid_scope", "unknown scope profile")
        return provider.handle(request)

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as http,
        pytest.raises(errors.FailedPrecondition, match="invalid_scope: unknown scope profile"),
    ):
        device_login(DETAILS, http=http, say=print, sleep=fake_time.sleep, clock=fake_time.clock)


def test_provider_unreachable_while_polling(provider: Provider, fake_time: FakeTime) -> None:
    provider.token_replies = [httpx.ConnectError("connection refused")]
    with pytest.raises(errors.Unavailable, match="cannot reach the identity provider"):
        login(provider, fake_time)


# -- discovery -----------------------------------------------------------------------------------


def test_discovery_returns_the_metadata(provider: Provider) -> None:
    with provider.client() as http:
        meta = discover(ISSUER, http=http)
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert provider.requests[0].url == f"{ISSUER}/.well-known/openid-configuration"


def test_discovery_refuses_another_issuer(provider: Provider) -> None:
    provider.issuer = "https://evil.example"
    with provider.client() as http, pytest.raises(errors.FailedPrecondition) as info:
        discover(ISSUER, http=http)
    assert "https://evil.example" in str(info.value)
    assert "\n" not in str(info.value)


def test_discovery_requires_the_device_endpoint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/t"})

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(errors.FailedPrecondition, match="device_authorization_endpoint"),
    ):
        discover(ISSUER, http=http)


@pytest.mark.parametrize(
    "reply", [httpx.Response(200, text="<html>"), httpx.Response(404), httpx.Response(200, json=[])]
)
def test_discovery_refuses_a_bad_document(reply: httpx.Response) -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(lambda _: reply)) as http,
        pytest.raises(errors.FailedPrecondition, match=ISSUER),
    ):
        discover(ISSUER, http=http)


def test_discovery_of_an_unreachable_provider() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(errors.Unavailable, match="Connection refused"),
    ):
        discover(ISSUER, http=http)


# -- the token file ------------------------------------------------------------------------------


def stored(expires_at: float = 10_000.0, refresh: str = REFRESH, **changes: Any) -> Tokens:
    tokens = Tokens(
        access_token=ACCESS,
        refresh_token=refresh,
        expires_at=expires_at,
        issuer=ISSUER,
        client_id=CLIENT,
        token_endpoint=f"{ISSUER}/token",
        revocation_endpoint=f"{ISSUER}/revoke",
        scopes=("openid",),
    )
    return replace(tokens, **changes)


def test_config_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert credentials.config_dir() == tmp_path / "home"
    monkeypatch.delenv("FLWR_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert credentials.config_dir() == tmp_path / "xdg" / "corolla"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert credentials.config_dir() == tmp_path / "user" / ".config" / "corolla"


def test_token_file_is_private_and_round_trips(flwr_home: Path) -> None:
    path = credentials_path("local", "127.0.0.1:9093")
    save_tokens(path, stored())
    assert path.parent == flwr_home / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_tokens(path) == stored()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind

    save_tokens(path, stored(access_token="access-token-SECRET-2"))  # replaced, still private
    loaded = load_tokens(path)
    assert loaded is not None and loaded.access_token == "access-token-SECRET-2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert delete_tokens(path) is True
    assert load_tokens(path) is None
    assert delete_tokens(path) is False


@pytest.mark.parametrize("content", ["{not json", '{"version": 1}', "[]", ACCESS])
def test_a_corrupt_token_file(content: str) -> None:
    path = credentials_path("local", "127.0.0.1:9093")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(errors.InvalidArgument, match="run `flwr login` again") as info:
        load_tokens(path)
    assert_no_secret(str(info.value))


def test_credentials_path_is_keyed_by_federation_and_address() -> None:
    paths = {
        credentials_path("local", "127.0.0.1:9093"),
        credentials_path("local", "127.0.0.1:9094"),
        credentials_path("other", "127.0.0.1:9093"),
        credentials_path("a\0b", "c"),
        credentials_path("a", "b\0c"),
    }
    assert len(paths) == 5
    assert credentials_path("local", "x") == credentials_path("local", "x")
    odd = credentials_path("../../etc/passwd", "x")
    assert odd.parent == credentials.config_dir() / "credentials"
    assert "/" not in odd.name and odd.name.endswith(".json")
    assert credentials_path("prod-eu", "x").name.startswith("prod-eu-")


def test_not_logged_in_message() -> None:
    assert credentials.not_logged_in_message("prod", Path("my app")) == (
        "not logged in to federation 'prod' (run `flwr login 'my app' prod`)"
    )


# -- token session -------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(provider: Provider, now: float = 1000.0) -> tuple[TokenSession, Path]:
    path = credentials_path("local", "127.0.0.1:9093")
    return TokenSession(path, http_factory=provider.client, clock=Clock(now)), path


def test_session_not_logged_in(provider: Provider) -> None:
    tokens, _ = session(provider)
    assert tokens.access_token() is None
    assert tokens.refresh() is False
    assert provider.requests == []


def test_session_returns_a_valid_token_without_asking(provider: Provider) -> None:
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=1000.0 + 31))
    assert sess.access_token() == ACCESS
    assert sess.access_token() == ACCESS
    assert provider.requests == []


def test_session_token_without_lifetime_never_refreshes(provider: Provider) -> None:
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=0.0))
    assert sess.access_token() == ACCESS
    assert provider.requests == []


def test_session_refreshes_near_expiry_and_saves_rotated_tokens(provider: Provider) -> None:
    provider.token_replies = [granted("access-token-SECRET-2", "refresh-token-SECRET-2")]
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=1000.0 + 29))
    assert sess.access_token() == "access-token-SECRET-2"
    assert provider.forms("/token") == [
        {"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": CLIENT}
    ]
    saved = load_tokens(path)
    assert saved is not None
    assert saved.access_token == "access-token-SECRET-2"
    assert saved.refresh_token == "refresh-token-SECRET-2"
    assert saved.expires_at == 1300.0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sess.access_token() == "access-token-SECRET-2"
    assert len(provider.requests) == 1


def test_refresh_keeps_the_refresh_token_when_none_is_returned(provider: Provider) -> None:
    provider.token_replies = [granted("access-token-SECRET-2", refresh=None)]
    sess, path = session(provider)
    save_tokens(path, stored())
    assert sess.refresh() is True
    saved = load_tokens(path)
    assert saved is not None
    assert (saved.access_token, saved.refresh_token) == ("access-token-SECRET-2", REFRESH)
    assert saved.revocation_endpoint == f"{ISSUER}/revoke"


def test_invalid_grant_ends_the_session(provider: Provider) -> None:
    provider.token_replies = [oauth_error("invalid_grant", "Token is not active")]
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=900.0))
    assert sess.access_token() is None
    assert not path.exists()
    assert sess.access_token() is None
    assert sess.refresh() is False


def test_refresh_rotated_by_another_process_is_used(provider: Provider) -> None:
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=900.0))

    def rotate_elsewhere(request: httpx.Request) -> httpx.Response:
        save_tokens(
            path,
            stored(
                access_token="access-token-SECRET-2",
                refresh="refresh-token-SECRET-2",
                expires_at=2000.0,
            ),
        )
        return oauth_error("invalid_grant")

    sess = TokenSession(
        path,
        http_factory=lambda: httpx.Client(transport=httpx.MockTransport(rotate_elsewhere)),
        clock=Clock(1000.0),
    )
    assert sess.access_token() == "access-token-SECRET-2"
    assert path.exists()


def test_expired_token_without_refresh_token_is_no_login(provider: Provider) -> None:
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=999.0, refresh=""))
    assert sess.access_token() is None
    assert provider.requests == []


def test_refresh_with_the_provider_unreachable(provider: Provider) -> None:
    provider.token_replies = [httpx.ConnectError("connection refused")]
    sess, path = session(provider)
    save_tokens(path, stored(expires_at=1010.0))  # within the margin, not yet expired
    assert sess.access_token() == ACCESS
    save_tokens(path, stored(expires_at=990.0))  # expired
    with pytest.raises(errors.Unavailable) as info:
        TokenSession(path, http_factory=provider.client, clock=Clock(1000.0)).access_token()
    assert_no_secret(str(info.value))
    assert path.exists()


def test_refresh_refused_otherwise_is_an_error(provider: Provider) -> None:
    provider.token_replies = [oauth_error("invalid_client", "client disabled", status=401)]
    sess, path = session(provider)
    save_tokens(path, stored())
    with pytest.raises(errors.FailedPrecondition, match="invalid_client: client disabled") as info:
        sess.refresh()
    assert_no_secret(str(info.value))
    assert path.exists()


# -- revocation ----------------------------------------------------------------------------------


def test_revoke_posts_both_tokens_with_hints(provider: Provider) -> None:
    with provider.client() as http:
        assert revoke(stored(), http=http) is True
    assert provider.forms("/revoke") == [
        {"token": REFRESH, "token_type_hint": "refresh_token", "client_id": CLIENT},
        {"token": ACCESS, "token_type_hint": "access_token", "client_id": CLIENT},
    ]


def test_revoke_without_endpoint_or_refused(provider: Provider) -> None:
    with provider.client() as http:
        assert revoke(stored(revocation_endpoint=""), http=http) is False
    assert provider.requests == []
    refusing = httpx.MockTransport(lambda _: oauth_error("unsupported_token_type"))
    with httpx.Client(transport=refusing) as http:
        assert revoke(stored(), http=http) is False


def test_revoke_with_the_provider_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(errors.Unavailable) as info,
    ):
        revoke(stored(), http=http)
    assert_no_secret(str(info.value))


# -- flwr login / flwr logout --------------------------------------------------------------------


PYPROJECT = """
[project]
name = "demo"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "demo.server_app:app"
clientapp = "demo.client_app:app"

[tool.flwr.federations]
default = "local"

[tool.flwr.federations.local]
address = "127.0.0.1:9093"
insecure = true
"""


class FakeExecClient:
    def __init__(self, details: LoginDetails | None) -> None:
        self.details = details

    def __enter__(self) -> FakeExecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_login_details(self) -> LoginDetails | None:
        return self.details


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "demo"
    app.mkdir()
    (app / "pyproject.toml").write_text(PYPROJECT)
    return app


@pytest.fixture
def cli(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[LoginDetails | None], None]]:
    def use(details: LoginDetails | None) -> None:
        monkeypatch.setattr(login_command, "connect", lambda fed, app_dir: FakeExecClient(details))

    monkeypatch.setattr(login_command, "http_client", provider.client)
    monkeypatch.setattr(login_command, "device_login", partial(device_login, sleep=lambda _: None))
    yield use


def test_flwr_login_and_logout(
    provider: Provider,
    cli: Callable[[LoginDetails | None], None],
    app_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli(DETAILS)
    access = jwt.encode({"preferred_username": "alice", "sub": "1"}, "k" * 32, algorithm="HS256")
    provider.token_replies = [oauth_error("authorization_pending"), granted(access)]
    login_command.login(app_dir, None)
    out = capsys.readouterr().out
    assert "WDJB-MJHT" in out and f"{ISSUER}/device" in out
    assert "Logged in to federation 'local' as alice." in out
    assert_no_secret(out)
    assert access not in out
    path = credentials_path("local", "127.0.0.1:9093")
    saved = load_tokens(path)
    assert saved is not None and saved.access_token == access

    login_command.logout(app_dir, None)
    assert "Logged out of federation 'local' (tokens revoked" in capsys.readouterr().out
    assert not path.exists()
    assert [f["token_type_hint"] for f in provider.forms("/revoke")] == [
        "refresh_token",
        "access_token",
    ]

    login_command.logout(app_dir, None)
    assert "Not logged in to federation 'local'." in capsys.readouterr().out


def test_flwr_login_with_an_opaque_token_and_no_auth(
    provider: Provider,
    cli: Callable[[LoginDetails | None], None],
    app_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli(None)
    login_command.login(app_dir, None)
    assert "does not require a login" in capsys.readouterr().out
    assert provider.requests == []

    cli(DETAILS)
    provider.token_replies = [granted()]
    login_command.login(app_dir, None)
    assert "Logged in to federation 'local'." in capsys.readouterr().out


def test_flwr_logout_deletes_even_if_the_provider_is_down(
    provider: Provider,
    cli: Callable[[LoginDetails | None], None],
    app_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = credentials_path("local", "127.0.0.1:9093")
    save_tokens(path, stored())

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    cli(DETAILS)
    client = partial(httpx.Client, transport=httpx.MockTransport(down))
    monkeypatch.setattr(login_command, "http_client", client)
    login_command.logout(app_dir, None)
    assert not path.exists()
    assert "Logged out of federation 'local'" in capsys.readouterr().out
    assert "cannot reach the identity provider" in caplog.text
    assert_no_secret(caplog.text)
