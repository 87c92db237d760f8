"""User login for the CLI: OAuth 2.0 device flow, stored tokens, refresh and revocation.

The SuperLink names its identity provider (`LoginDetails`); `device_login` gets tokens from it
by the Device Authorization Grant (RFC 8628); `corolla.cli.credentials` keeps them per
federation *and* SuperLink address, owner-only (0600). `TokenSession` hands the Exec client a
valid access token, refreshing it shortly before it expires. Tokens never appear in output,
logs, exception messages or reprs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corolla.cli.credentials import (
    Tokens,
    delete_tokens,
    load_tokens,
    save_tokens,
)
from corolla.common import errors
from corolla.common.net import is_loopback_host

if TYPE_CHECKING:  # imported where used: every `flwr` command loads this module, few talk HTTP
    import httpx

HTTP_TIMEOUT = 10.0  # seconds, for each request to the identity provider
DEFAULT_INTERVAL = 5  # RFC 8628 §3.2: poll every 5 seconds unless told otherwise
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: a slow_down adds 5 seconds to the interval
DEFAULT_CODE_LIFETIME = 900  # seconds, if the provider does not say (it must, but still)
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginDetails:
    """What the SuperLink tells the CLI about logging in: whom to ask and as which client."""

    issuer: str
    client_id: str
    scopes: tuple[str, ...]


# -- talking to the identity provider ------------------------------------------------------------


def http_client() -> httpx.Client:
    """The HTTP client for the identity provider (every request also sets its own timeout)."""
    import httpx

    return httpx.Client(timeout=HTTP_TIMEOUT, headers={"Accept": "application/json"})


def discover(issuer: str, *, http: httpx.Client) -> dict[str, Any]:
    """The OpenID Provider metadata of ``issuer``; it must name ``issuer`` itself and offer the
    device authorization and token endpoints."""
    import httpx

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    if url.startswith("http://") and not is_loopback_host(httpx.URL(url).host):
        log.warning("identity provider %s is reached without TLS", issuer)
    try:
        response = http.get(url, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise _unreachable(issuer, exc) from exc
    if response.status_code != 200:
        raise errors.FailedPrecondition(
            f"identity provider {issuer}: HTTP {response.status_code} for {url}"
        )
    meta = _json_object(response)
    if meta is None:
        raise errors.FailedPrecondition(f"identity provider {issuer}: {url} is not a JSON object")
    if meta.get("issuer") != issuer:
        raise errors.FailedPrecondition(
            f"identity provider {issuer}: its discovery document names issuer "
            f"{_clean(str(meta.get('issuer')))!r}; refusing a provider that is not the one the "
            "SuperLink trusts"
        )
    for endpoint in ("device_authorization_endpoint", "token_endpoint"):
        if not isinstance(meta.get(endpoint), str) or not meta[endpoint]:
            raise errors.FailedPrecondition(
                f"identity provider {issuer} offers no {endpoint} "
                "(is the device authorization grant enabled?)"
            )
    return meta


def device_login(
    details: LoginDetails,
    *,
    http: httpx.Client,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Tokens:
    """Log in by the device flow: ``say`` where to approve, then poll until it is approved."""
    import httpx

    meta = discover(details.issuer, http=http)
    code = _request_device_code(details, meta["device_authorization_endpoint"], http)
    say(f"To log in, open {code.verification_uri} and enter the code {code.user_code}")
    if code.verification_uri_complete:
        say(f"(or open {code.verification_uri_complete}, which has the code in it)")
    say("Waiting for the login to be approved...")

    interval = code.interval
    deadline = clock() + code.expires_in
    token_endpoint: str = meta["token_endpoint"]
    poll = {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": code.device_code,
        "client_id": details.client_id,
    }
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise _expired()
        try:
            response = http.post(token_endpoint, data=poll, timeout=HTTP_TIMEOUT)
        except httpx.TimeoutException:
            interval *= 2  # RFC 8628 §3.5: back off on a connection timeout, then retry
            continue
        except httpx.HTTPError as exc:
            raise _unreachable(details.issuer, exc) from exc
        if response.status_code == 200:
            return _tokens_from(response, details, meta, previous=None, now=wall_clock())
        error, _ = _oauth_error(response)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "access_denied":
            raise errors.PermissionDenied("login refused at the identity provider")
        if error == "expired_token":
            raise _expired()
        raise _refused(details.issuer, "login failed", response)


@dataclass(frozen=True)
class _DeviceCode:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str  # "" when the provider gives none
    interval: int
    expires_in: int


def _request_device_code(details: LoginDetails, endpoint: str, http: httpx.Client) -> _DeviceCode:
    data = {"client_id": details.client_id, "scope": " ".join(details.scopes)}
    response = _post(http, endpoint, data, details.issuer)
    grant = _json_object(response)
    if response.status_code != 200 or grant is None:
        raise _refused(details.issuer, "refused to start the login", response)
    device_code = grant.get("device_code")
    user_code = grant.get("user_code")
    uri = grant.get("verification_uri") or grant.get("verification_url")  # the latter: Google
    complete = grant.get("verification_uri_complete")
    if not (
        isinstance(device_code, str)
        and device_code
        and isinstance(user_code, str)
        and user_code
        and isinstance(uri, str)
        and uri
    ):
        raise errors.FailedPrecondition(
            f"identity provider {details.issuer}: its device authorization answer lacks "
            "device_code, user_code or verification_uri"
        )
    return _DeviceCode(
        device_code=device_code,
        user_code=_clean(user_code),
        verification_uri=_clean(uri),
        verification_uri_complete=_clean(complete) if isinstance(complete, str) else "",
        interval=max(1, _int(grant.get("interval"), DEFAULT_INTERVAL)),
        expires_in=_int(grant.get("expires_in"), DEFAULT_CODE_LIFETIME),
    )


def revoke(tokens: Tokens, *, http: httpx.Client) -> bool:
    """Revoke the refresh token, then the access token, at the provider (RFC 7009).

    True if the provider confirmed every revocation; False if it has no revocation endpoint or
    refused. Raises `Unavailable` if it cannot be reached."""
    if not tokens.revocation_endpoint:
        return False
    confirmed = True
    for hint, token in (
        ("refresh_token", tokens.refresh_token),
        ("access_token", tokens.access_token),
    ):
        if not token:
            continue
        data = {"token": token, "token_type_hint": hint, "client_id": tokens.client_id}
        response = _post(http, tokens.revocation_endpoint, data, tokens.issuer)
        if response.status_code != 200:
            error, _ = _oauth_error(response)
            log.warning(
                "identity provider %s did not revoke the %s: %s",
                tokens.issuer,
                hint.replace("_", " "),
                error or f"HTTP {response.status_code}",
            )
            confirmed = False
    return confirmed


def user_name(access_token: str) -> str | None:
    """Who the token says its holder is, to greet them; the claims are read, not verified."""
    import jwt

    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    for claim in ("preferred_username", "email", "name", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return _clean(value)
    return None


class TokenSession:
    """The access token for each Exec call, refreshed ``margin`` seconds before it expires.

    Tokens are read from ``path`` once and re-read before each refresh, so another `flwr`
    process that rotated them is noticed. One lock serialises refreshes within the process."""

    def __init__(
        self,
        path: Path,
        *,
        http_factory: Callable[[], httpx.Client] | None = None,
        clock: Callable[[], float] = time.time,
        margin: float = 30.0,
    ) -> None:
        self.path = path
        self._http_factory = http_factory or http_client
        self._clock = clock
        self._margin = margin
        self._lock = threading.Lock()
        self._tokens: Tokens | None = None
        self._loaded = False

    def access_token(self) -> str | None:
        """A valid access token, or None when not logged in (or the session is over)."""
        with self._lock:
            if not self._loaded:
                self._tokens, self._loaded = load_tokens(self.path), True
            if self._tokens is None or self._fresh(self._tokens):
                return self._tokens.access_token if self._tokens else None
            tokens = self._tokens = load_tokens(self.path)  # another process may have refreshed
            if tokens is None or self._fresh(tokens):
                return tokens.access_token if tokens else None
            expired = tokens.expires_at <= self._clock()
            if not tokens.refresh_token:
                return None if expired else tokens.access_token
            try:
                fresh = self._refresh_locked(tokens)
            except errors.Unavailable:
                if expired:
                    raise
                log.warning("cannot refresh the login now; using the token while it lasts")
                return tokens.access_token
            return fresh.access_token if fresh else None

    def refresh(self) -> bool:
        """Get new tokens with the refresh token. False when there is none or the provider
        ended the session (then the token file is deleted: `flwr login` again)."""
        with self._lock:
            tokens = self._tokens = load_tokens(self.path)
            self._loaded = True
            return tokens is not None and self._refresh_locked(tokens) is not None

    def _fresh(self, tokens: Tokens) -> bool:
        return not tokens.expires_at or tokens.expires_at - self._margin > self._clock()

    def _refresh_locked(self, tokens: Tokens) -> Tokens | None:
        if not tokens.refresh_token:
            return None
        data = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": tokens.client_id,
        }
        with self._http_factory() as http:
            response = _post(http, tokens.token_endpoint, data, tokens.issuer)
        if response.status_code == 200:
            details = LoginDetails(tokens.issuer, tokens.client_id, tokens.scopes)
            meta = {
                "token_endpoint": tokens.token_endpoint,
                "revocation_endpoint": tokens.revocation_endpoint,
            }
            fresh = _tokens_from(response, details, meta, previous=tokens, now=self._clock())
            save_tokens(self.path, fresh)
            self._tokens = fresh
            return fresh
        error, _ = _oauth_error(response)
        if error != "invalid_grant":
            raise _refused(tokens.issuer, "refused to refresh the login", response)
        current = load_tokens(self.path)
        if current is not None and current.refresh_token != tokens.refresh_token:
            self._tokens = current  # another process rotated them meanwhile: use its tokens
            return current
        log.info("the identity provider ended the login session; removing %s", self.path)
        delete_tokens(self.path)
        self._tokens = None
        return None


# -- helpers -------------------------------------------------------------------------------------


def _post(http: httpx.Client, url: str, data: Mapping[str, str], issuer: str) -> httpx.Response:
    import httpx

    try:
        return http.post(url, data=dict(data), timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise _unreachable(issuer, exc) from exc


def _tokens_from(
    response: httpx.Response,
    details: LoginDetails,
    meta: Mapping[str, Any],
    *,
    previous: Tokens | None,
    now: float,
) -> Tokens:
    body = _json_object(response)
    access = body.get("access_token") if body else None
    if body is None or not isinstance(access, str) or not access:
        raise errors.FailedPrecondition(
            f"identity provider {details.issuer}: its token answer has no access_token"
        )
    refresh = body.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = previous.refresh_token if previous else ""
    lifetime = _int(body.get("expires_in"), 0)
    scope = body.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) and scope else details.scopes
    revocation = meta.get("revocation_endpoint")
    return Tokens(
        access_token=access,
        refresh_token=refresh,
        expires_at=now + lifetime if lifetime > 0 else 0.0,
        issuer=details.issuer,
        client_id=details.client_id,
        token_endpoint=str(meta["token_endpoint"]),
        revocation_endpoint=revocation if isinstance(revocation, str) else "",
        scopes=scopes,
    )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    """The OAuth ``error`` and ``error_description`` of an answer, "" where absent."""
    body = _json_object(response) or {}
    error, description = body.get("error"), body.get("error_description")
    return (
        error if isinstance(error, str) else "",
        description if isinstance(description, str) else "",
    )


def _refused(issuer: str, what: str, response: httpx.Response) -> errors.CorollaError:
    error, description = _oauth_error(response)
    reason = _clean(error) or f"HTTP {response.status_code}"
    if description:
        reason = f"{reason}: {_clean(description)}"
    message = f"identity provider {issuer} {what} ({reason})"
    if response.status_code >= 500 and not error:
        return errors.Unavailable(message)
    return errors.FailedPrecondition(message)


def _unreachable(issuer: str, exc: httpx.HTTPError) -> errors.Unavailable:
    return errors.Unavailable(
        f"cannot reach the identity provider {issuer}: {_clean(str(exc)) or type(exc).__name__}"
    )


def _expired() -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(
        "the code expired before it was approved; run `flwr login` again"
    )


def _clean(text: str, limit: int = 200) -> str:
    """Provider text made safe for one terminal line: no control characters, bounded."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return int(value)
    except (ValueError, OverflowError):  # "x", NaN, Infinity
        return default
