"""A real OpenID Connect provider on 127.0.0.1 for integration tests.

It runs the npm package ``oidc-provider`` (``tests/oidc/op.mjs``, dependencies installed by
``npm ci --prefix tests/oidc``, which ``./dev test`` does) with the device authorization grant
(RFC 8628), refresh tokens, revocation and introspection. Access tokens are JWTs (``typ``
``at+jwt``) signed by the first key of `OidcProvider.keys`, for offline validation against the
provider's ``/jwks``::

    {"iss": "http://127.0.0.1:<port>", "aud": "corolla-exec", "sub": "alice",
     "groups": ["researcher"], "client_id": "flwr-cli", "scope": "openid offline_access",
     "iat": ..., "nbf": <iat>, "exp": <iat + access_token_ttl>, "jti": ...}

Test users (login -> ``groups``; any password signs in):

=======  ================
alice    ["researcher"]
bob      ["researcher"]
carol    ["admin"]
dave     ["viewer"]
erin     [] (no groups)
other    [] (any other login signs in, with no groups)
=======  ================

Clients: ``flwr-cli`` (public: no secret; grants device_code and refresh_token) and ``superlink``
(confidential: secret `SUPERLINK_SECRET`, client_secret_basic; grant client_credentials).

The device flow: POST ``client_id=flwr-cli&scope=openid offline_access`` to the discovery's
``device_authorization_endpoint``; ``resource`` need not be sent (the provider defaults it to
`OidcProvider.resource`, which gives audience `OidcProvider.audience`); the response's
``interval`` is 1 s (``poll_interval``); a refresh token comes with every device-flow token
response, whatever the scope. Refresh tokens rotate (each refresh returns a new one and
invalidates the old; reusing an old one revokes the whole grant) unless
``rotate_refresh_token=False``.

Gotchas: ``resource``, when sent, must be the absolute URI `DEFAULT_RESOURCE`, not the audience
(``invalid_target``). JWT access tokens cannot be revoked or introspected at the provider
(``unsupported_token_type``), and ``/me`` refuses them: revoke the refresh token to log out,
and read the user from the ID token (``sub``; ``preferred_username``, ``email`` and ``groups``
too when the scope asks for profile, email, groups). State is in memory: a restart forgets
every grant and refresh token.

Usage in a test module (``tests/`` is on ``sys.path``, as for ``tls_helpers``)::

    from oidc_provider import OidcProvider, approve, new_keys

    @pytest.fixture(scope="module")
    def oidc() -> Iterator[OidcProvider]:
        with OidcProvider().start() as provider:
            yield provider

    def test_login(oidc: OidcProvider) -> None:
        ...  # start the device flow at oidc.discovery()["device_authorization_endpoint"]
        approve(verification_uri_complete, "alice")
        ...
        oidc.restart(keys=new_keys(kid="rotated"))  # same port, so the same issuer
        expired = oidc.mint(oidc.claims_for("alice", exp=int(time.time()) - 60))
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

OIDC_DIR = Path(__file__).parent / "oidc"
SCRIPT = OIDC_DIR / "op.mjs"
CLI_CLIENT_ID = "flwr-cli"
SUPERLINK_CLIENT_ID = "superlink"
SUPERLINK_SECRET = "superlink-test-secret"
DEFAULT_AUDIENCE = "corolla-exec"
DEFAULT_RESOURCE = "urn:corolla:exec"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USERS: dict[str, list[str]] = {
    "alice": ["researcher"],
    "bob": ["researcher"],
    "carol": ["admin"],
    "dave": ["viewer"],
    "erin": [],
}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0

Jwk = dict[str, Any]


class OidcProviderError(Exception):
    """The test provider could not start, or a scripted browser step found no expected form."""


def new_keys(kid: str | None = None, alg: str = "RS256") -> list[Jwk]:
    """A fresh key set of one private signing JWK (``RS256``: RSA 2048; ``ES256``: EC P-256)."""
    kid = kid or f"key-{secrets.token_hex(4)}"
    if alg == "RS256":
        jwk = RSAAlgorithm.to_jwk(
            rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
        )
    elif alg == "ES256":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    else:
        raise ValueError(f"unsupported alg {alg!r}: use RS256 or ES256")
    return [{**jwk, "kid": kid, "use": "sig", "alg": alg}]


def sign(claims: dict[str, Any], key: Jwk, headers: dict[str, Any] | None = None) -> str:
    """A JWT of exactly ``claims`` signed with the private JWK ``key`` (``kid`` and ``typ``
    ``at+jwt`` in the header unless ``headers`` says otherwise)."""
    header = {"kid": key["kid"], "typ": "at+jwt", **(headers or {})}
    return jwt.encode(claims, jwt.PyJWK(key).key, algorithm=key["alg"], headers=header)


class OidcProvider:
    """One ``node tests/oidc/op.mjs`` process; `start` returns self, `stop` reaps it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None
        self._settings: dict[str, Any] = {}
        self.issuer = ""
        self.port = 0
        self.keys: list[Jwk] = []
        self.audience = DEFAULT_AUDIENCE
        self.resource = DEFAULT_RESOURCE
        self.access_token_ttl = 3600

    def start(
        self,
        port: int = 0,
        keys: list[Jwk] | None = None,
        access_token_ttl: int = 3600,
        *,
        audience: str = DEFAULT_AUDIENCE,
        rotate_refresh_token: bool = True,
        poll_interval: int = 1,
        timeout: float = START_TIMEOUT,
    ) -> OidcProvider:
        """Start the provider on ``port`` (0: a free one) signing with ``keys[0]`` (default: a
        fresh RS256 key); all of ``keys`` are published at ``/jwks``."""
        if self._proc is not None:
            raise OidcProviderError("the provider is already running")
        node = shutil.which("node")
        if node is None:
            raise OidcProviderError("node is not installed (./dev test installs it)")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise OidcProviderError(f"run: npm ci --prefix {OIDC_DIR} --no-audit --no-fund")
        self.keys = keys if keys is not None else new_keys()
        self.audience = audience
        self.access_token_ttl = access_token_ttl
        self._settings = {
            "audience": audience,
            "rotate_refresh_token": rotate_refresh_token,
            "poll_interval": poll_interval,
        }
        self._tmp = tempfile.TemporaryDirectory(prefix="corolla-oidc-")
        tmp = Path(self._tmp.name)
        jwks_file, ready_file, self._log = tmp / "jwks.json", tmp / "ready.json", tmp / "op.log"
        jwks_file.write_text(json.dumps({"keys": self.keys}))
        env = {
            **os.environ,
            "PORT": str(port),
            "READY_FILE": str(ready_file),
            "JWKS_FILE": str(jwks_file),
            "AUDIENCE": audience,
            "RESOURCE": DEFAULT_RESOURCE,
            "AT_TTL": str(access_token_ttl),
            "POLL_INTERVAL": str(poll_interval),
            "ROTATE_REFRESH_TOKEN": "1" if rotate_refresh_token else "0",
            "EXIT_ON_STDIN_EOF": "1",
        }
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [node, str(SCRIPT)],
                cwd=OIDC_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            ready = self._wait_ready(ready_file, timeout)
        except BaseException:
            self.stop()
            raise
        self.issuer, self.port, self.resource = ready["issuer"], ready["port"], ready["resource"]
        return self

    def _wait_ready(self, ready_file: Path, timeout: float) -> dict[str, Any]:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if self._proc.poll() is not None:
                raise OidcProviderError(
                    f"the provider exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise OidcProviderError(
                    f"the provider was not ready in {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        ready: dict[str, Any] = json.loads(ready_file.read_text())
        if ready.get("pid") != self._proc.pid:
            raise OidcProviderError(f"the ready file is of another process: {ready}")
        return ready

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the provider's stdout and stderr."""
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the provider (kill it after ``timeout``) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def restart(self, keys: list[Jwk] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same port (same issuer), with ``keys`` if given. Every
        grant and refresh token is forgotten."""
        port, settings = self.port, self._settings
        self.stop()
        keys = keys if keys is not None else self.keys
        self.start(port, keys, self.access_token_ttl, timeout=timeout, **settings)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> OidcProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def discovery(self) -> dict[str, Any]:
        """The provider's ``/.well-known/openid-configuration``."""
        return _get_json(f"{self.issuer}/.well-known/openid-configuration")

    def jwks(self) -> dict[str, Any]:
        """The public key set the provider serves at ``/jwks``."""
        return _get_json(f"{self.issuer}/jwks")

    def claims_for(self, login: str, **overrides: Any) -> dict[str, Any]:
        """Claims like those of this provider's access tokens for ``login``, valid now; an
        override of None drops that claim (``exp=None``: a token that never expires)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": login,
            "groups": list(USERS.get(login, [])),
            "client_id": CLI_CLIENT_ID,
            "scope": "openid offline_access",
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "nbf": now,
            "exp": now + self.access_token_ttl,
            **overrides,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def mint(
        self,
        claims: dict[str, Any],
        key: Jwk | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A JWT of exactly ``claims`` signed by the provider's signing key, or by ``key``
        (one of `keys`, or a foreign key from `new_keys`)."""
        if key is None:
            if not self.keys:
                raise OidcProviderError("the provider has no keys: start it first")
            key = self.keys[0]
        return sign(claims, key, headers)


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


class _Form:
    def __init__(self, attrs: dict[str, str | None]) -> None:
        self.id = attrs.get("id") or ""
        self.action = attrs.get("action") or ""
        self.method = (attrs.get("method") or "get").lower()
        self.fields: dict[str, str] = {}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.title = ""
        self._form: _Form | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self._form = _Form(attributes)
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and attributes.get("name"):
            self._form.fields[str(attributes["name"])] = attributes.get("value") or ""
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _page(response: httpx.Response) -> _FormParser:
    parser = _FormParser()
    parser.feed(response.text)
    return parser


def _submit(
    client: httpx.Client,
    response: httpx.Response,
    step: str,
    match: dict[str, str | None],
    **fill: str,
) -> httpx.Response:
    """Submit, with ``fill``, the page's form holding the fields of ``match`` (with those
    values; None: any value)."""
    page = _page(response)
    for form in page.forms:
        if form.method == "post" and all(
            name in form.fields and value in (None, form.fields[name])
            for name, value in match.items()
        ):
            return client.post(response.url.join(form.action), data={**form.fields, **fill})
    raise OidcProviderError(
        f"{step}: no form with fields {match} at {response.url} "
        f"(HTTP {response.status_code}, page {page.title.strip()!r})"
    )


def _confirm_page(client: httpx.Client, verification_uri_complete: str) -> httpx.Response:
    opened = client.get(verification_uri_complete)
    # The page posts the user code back by script (a form_post); a browser without script
    # submits the same form.
    return _submit(client, opened, "open the verification page", {"xsrf": None, "user_code": None})


def approve(verification_uri_complete: str, login: str, password: str = "any") -> None:
    """Play the user approving a device code in a browser: confirm the code, sign in as
    ``login``, grant consent."""
    with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT) as client:
        confirm = _confirm_page(client, verification_uri_complete)
        signin = _submit(client, confirm, "confirm the device", {"xsrf": None, "confirm": "yes"})
        consent = _submit(
            client, signin, "sign in", {"prompt": "login"}, login=login, password=password
        )
        done = _submit(client, consent, "grant consent", {"prompt": "consent"})
        if "Sign-in Success" not in done.text:
            page = _page(done)
            raise OidcProviderError(
                f"approval of {login!r} did not succeed: HTTP {done.status_code} at {done.url}, "
                f"page {page.title.strip()!r}"
            )


def deny(verification_uri_complete: str) -> None:
    """Play the user aborting at the device confirmation page: the CLI's next poll gets
    ``access_denied``."""
    with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT) as client:
        confirm = _confirm_page(client, verification_uri_complete)
        done = _submit(
            client, confirm, "abort at the device confirmation", {"confirm": "yes"}, abort="yes"
        )
        if "interrupted" not in done.text:
            raise OidcProviderError(f"aborting was not acknowledged: HTTP {done.status_code}")
