"""`TokenValidator`: real HTTP to a small provider on loopback, tokens signed by real keys."""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from tls_helpers import TlsMaterial

from corolla.common.errors import Unauthenticated, Unavailable
from corolla.superlink.oidc import Identity, TokenValidator
from corolla.superlink.userauth import Role, UserAuthConfig

NOW = 1_750_000_000.0
AUDIENCE = "corolla-exec"
DISCOVERY = "/.well-known/openid-configuration"
THREADS = 32
WAIT = 30.0  # seconds a test waits for its threads

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class Key:
    kid: str
    private: PrivateKey
    alg: str

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        return data | {"kid": self.kid, "use": "sig"} | extra


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_ED = ed25519.Ed25519PrivateKey.generate()
RSA = Key("rsa-1", _RSA, "RS256")
EC = Key("ec-1", _EC, "ES256")
ED = Key("ed-1", _ED, "EdDSA")
ROTATED = Key("rsa-2", _RSA_OTHER, "RS256")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Provider:
    """A discovery document and a JWKS on 127.0.0.1; what it serves can be changed live."""

    jwks: dict[str, Any]
    issuer: str = ""
    claimed_issuer: str | None = None  # the issuer the discovery document names
    jwks_uri: str | None = None
    mode: str = "up"  # "up", "503" (answers an error) or "drop" (closes the connection)
    fetches: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str) -> tuple[int, dict[str, Any]] | None:
        with self.lock:
            self.fetches[path] += 1
            if self.mode == "drop":
                return None
            if self.mode == "503":
                return 503, {"error": "down"}
            if path == DISCOVERY:
                issuer = self.issuer if self.claimed_issuer is None else self.claimed_issuer
                return 200, {"issuer": issuer, "jwks_uri": self.jwks_uri or self.issuer + "/jwks"}
            if path == "/jwks":
                return 200, self.jwks
            return 404, {}


def start(provider: Provider, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = provider.serve(self.path)
            if answer is None:
                return  # the connection closes without a response
            status, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "http" if tls is None else "https"
    provider.issuer = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    served = Provider(jwks={"keys": [RSA.jwk(), EC.jwk(), ED.jwk()]})
    server = start(served)
    yield served
    stop(server)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_config(provider: Provider, **changes: Any) -> UserAuthConfig:
    config = UserAuthConfig(
        issuer=provider.issuer,
        client_id="flwr-cli",
        audience=AUDIENCE,
        user_claim="preferred_username",
        roles={Role.ADMIN: frozenset({"admins"}), Role.USER: frozenset({"researchers"})},
    )
    return replace(config, **changes)


@pytest.fixture
def make_validator(provider: Provider, clock: Clock) -> Iterator[Any]:
    made: list[TokenValidator] = []

    def make(config: UserAuthConfig | None = None, **kwargs: Any) -> TokenValidator:
        validator = TokenValidator(config or make_config(provider), clock=clock, **kwargs)
        made.append(validator)
        return validator

    yield make
    for validator in made:
        validator.close()


@pytest.fixture
def validator(make_validator: Any) -> TokenValidator:
    made: TokenValidator = make_validator()
    return made


def claims_for(provider: Provider, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "aud": AUDIENCE,
        "sub": "f81d4fae-7dec",
        "preferred_username": "alice",
        "groups": ["researchers"],
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 300,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict[str, Any], key: Key = RSA, **header: Any) -> str:
    headers = {"kid": key.kid} | header
    alg = headers.pop("alg", key.alg)
    if headers.get("kid") is None:
        headers.pop("kid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short key, on purpose
        return jwt.encode(claims, key.private, algorithm=alg, headers=headers)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(
    validator: TokenValidator,
    token: str,
    match: str,
    kind: type[Exception] = Unauthenticated,
    caplog: pytest.LogCaptureFixture | None = None,
) -> str:
    with pytest.raises(kind, match=match) as info:
        validator.validate(token)
    message = str(info.value)
    assert "\n" not in message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in message
            if caplog is not None:
                assert part not in caplog.text
    return message


# -- good tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=lambda key: key.alg)
def test_valid_token(provider: Provider, validator: TokenValidator, key: Key) -> None:
    identity = validator.validate(sign(claims_for(provider), key))
    assert identity == Identity(
        user="alice", roles=frozenset({Role.USER}), subject="f81d4fae-7dec", expires_at=NOW + 300
    )


def test_ps256_with_an_rsa_key(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider), RSA, alg="PS256")
    assert validator.validate(token).user == "alice"


def test_roles_and_default_role(
    provider: Provider, make_validator: Any, validator: TokenValidator
) -> None:
    token = sign(claims_for(provider, groups=["admins", "researchers"]))
    assert validator.validate(token).roles == {Role.ADMIN, Role.USER}
    token = sign(claims_for(provider, groups="viewers"))
    assert validator.validate(token).roles == frozenset()
    keycloak = make_validator(
        make_config(
            provider,
            roles_claim="realm_access.roles",
            user_claim="email",
            default_role=Role.READ_ONLY,
        )
    )
    claims = claims_for(provider, realm_access={"roles": ["admins"]}, email="a@example.org")
    identity = keycloak.validate(sign(claims))
    assert (identity.user, identity.roles) == ("a@example.org", {Role.ADMIN})
    assert keycloak.validate(sign(claims | {"realm_access": {}})).roles == {Role.READ_ONLY}


def test_audience_in_a_list(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider, aud=["account", AUDIENCE]))
    assert validator.validate(token).user == "alice"


def test_user_defaults_to_sub(provider: Provider, make_validator: Any) -> None:
    validator = make_validator(make_config(provider, user_claim="sub"))
    assert validator.validate(sign(claims_for(provider))).user == "f81d4fae-7dec"


def test_token_without_kid_uses_the_one_fitting_key(
    provider: Provider, validator: TokenValidator
) -> None:
    assert validator.validate(sign(claims_for(provider), EC, kid=None)).user == "alice"
    provider.jwks = {"keys": [RSA.jwk(), ROTATED.jwk()]}
    validator.warm()
    refused(validator, sign(claims_for(provider), RSA, kid=None), "names no key")


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "a.b", "....", "e30.e30.", "x" * 70_000, "é.é.é"]
)
def test_malformed(validator: TokenValidator, token: str) -> None:
    refused(validator, token, "malformed")


def test_alg_none(provider: Provider, validator: TokenValidator) -> None:
    token = f"{b64({'alg': 'none', 'kid': RSA.kid})}.{b64(claims_for(provider))}."
    refused(validator, token, "not signed")
    token = f"{b64({'alg': 'None', 'kid': RSA.kid})}.{b64(claims_for(provider))}."
    refused(validator, token, "not signed")


def test_alg_hs256(provider: Provider, validator: TokenValidator) -> None:
    # The classic confusion: the RSA public key (as PEM) used as an HMAC secret.
    token = jwt.encode(claims_for(provider), "k" * 64, algorithm="HS256", headers={"kid": RSA.kid})
    refused(validator, token, "shared secret")
    assert provider.fetches["/jwks"] == 0  # refused before any key is looked at


def test_alg_not_accepted(provider: Provider, validator: TokenValidator) -> None:
    refused(validator, sign(claims_for(provider), RSA, alg="RS512"), "'RS512' is not accepted")


def test_alg_does_not_fit_the_key(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider), EC, kid=RSA.kid)  # ES256, naming the RSA key
    refused(validator, token, "does not fit")
    provider.jwks = {"keys": [RSA.jwk(alg="PS256")]}  # the key says it is for PS256 only
    validator.warm()
    refused(validator, sign(claims_for(provider), RSA), "does not fit")
    assert validator.validate(sign(claims_for(provider), RSA, alg="PS256")).user == "alice"


def test_unknown_key(provider: Provider, validator: TokenValidator) -> None:
    refused(validator, sign(claims_for(provider), ROTATED), "unknown key")


def test_tampered(provider: Provider, validator: TokenValidator) -> None:
    header, _, signature = sign(claims_for(provider)).split(".")
    forged = b64(claims_for(provider, groups=["admins"]))
    refused(validator, f"{header}.{forged}.{signature}", "signature is wrong")


def test_signed_by_a_foreign_key_with_a_known_kid(
    provider: Provider, validator: TokenValidator
) -> None:
    token = sign(claims_for(provider), replace(ROTATED, kid=RSA.kid))
    refused(validator, token, "signature is wrong")


def test_key_too_weak(provider: Provider, validator: TokenValidator) -> None:
    weak = Key("weak", rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256")
    provider.jwks = {"keys": [weak.jwk()]}
    refused(validator, sign(claims_for(provider), weak), "too weak")


def test_encryption_keys_are_ignored(provider: Provider, validator: TokenValidator) -> None:
    provider.jwks = {"keys": [RSA.jwk(use="enc"), EC.jwk()]}
    refused(validator, sign(claims_for(provider), RSA), "unknown key")


def test_wrong_issuer(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider, iss="https://evil.example"))
    refused(validator, token, "issued by another provider")


def test_wrong_audience(provider: Provider, validator: TokenValidator) -> None:
    refused(validator, sign(claims_for(provider, aud="flwr-cli")), "not meant for this SuperLink")
    refused(validator, sign(claims_for(provider, aud=["a", "b"])), "not meant for this SuperLink")
    refused(validator, sign(claims_for(provider, aud=None)), "names no audience")


@pytest.mark.parametrize("name", ["exp", "iat", "sub", "iss"])
def test_missing_required_claim(provider: Provider, validator: TokenValidator, name: str) -> None:
    refused(validator, sign(claims_for(provider, **{name: None})), f"no '{name}' claim")


def test_missing_or_bad_user_claim(provider: Provider, validator: TokenValidator) -> None:
    refused(validator, sign(claims_for(provider, preferred_username=None)), "naming the user")
    refused(validator, sign(claims_for(provider, preferred_username="")), "naming the user")
    refused(validator, sign(claims_for(provider, preferred_username=7)), "naming the user")


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_time_claim_not_a_number(provider: Provider, validator: TokenValidator, name: str) -> None:
    refused(validator, sign(claims_for(provider, **{name: "soon"})), f"'{name}' claim")


def test_expired(provider: Provider, validator: TokenValidator, clock: Clock) -> None:
    token = sign(claims_for(provider, exp=int(NOW) - 3600))
    refused(validator, token, "expired")


def test_not_valid_yet(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider, nbf=int(NOW) + 600))
    refused(validator, token, "not valid yet")


def test_issued_in_the_future(provider: Provider, validator: TokenValidator) -> None:
    token = sign(claims_for(provider, iat=int(NOW) + 600))
    refused(validator, token, "issued in the future")


def test_leeway_edges(provider: Provider, make_validator: Any, clock: Clock) -> None:
    validator = make_validator(make_config(provider, leeway=30.0))
    exp = int(NOW) + 100
    token = sign(claims_for(provider, exp=exp, nbf=int(NOW) - 5))
    clock.now = exp + 29.999
    assert validator.validate(token).expires_at == exp  # inside the leeway
    clock.now = exp + 30
    refused(validator, token, "expired")
    future = sign(claims_for(provider, iat=int(NOW) + 30, nbf=int(NOW) + 30))
    clock.now = NOW
    assert validator.validate(future).user == "alice"  # 30 s ahead: still inside
    clock.now = NOW - 0.001
    refused(validator, future, "not valid yet")
    strict = make_validator(make_config(provider, leeway=0.0))
    clock.now = exp - 0.001
    assert strict.validate(token).user == "alice"
    clock.now = exp
    refused(strict, token, "expired")


def test_nothing_secret_is_logged(
    provider: Provider, validator: TokenValidator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = sign(claims_for(provider))
    validator.validate(token)
    refused(validator, sign(claims_for(provider, aud="x")), "audience", caplog=caplog)
    refused(validator, sign(claims_for(provider), ROTATED), "unknown key", caplog=caplog)
    for part in token.split("."):
        assert part not in caplog.text


# -- discovery, the provider down, key rotation -------------------------------------------------


def test_discovery_and_keys_are_fetched_once(provider: Provider, validator: TokenValidator) -> None:
    for key in (RSA, EC, ED, RSA):
        validator.validate(sign(claims_for(provider), key))
    assert provider.fetches == {DISCOVERY: 1, "/jwks": 1}


def test_discovery_issuer_mismatch(
    provider: Provider, validator: TokenValidator, caplog: pytest.LogCaptureFixture
) -> None:
    provider.claimed_issuer = provider.issuer + "/"
    validator.warm()
    assert "names its issuer" in caplog.text
    refused(validator, sign(claims_for(provider)), "names its issuer", Unavailable)
    assert provider.fetches["/jwks"] == 0


def test_jwks_uri_must_be_https_off_this_machine(
    provider: Provider, validator: TokenValidator
) -> None:
    provider.jwks_uri = "http://keys.example.org/jwks"
    refused(validator, sign(claims_for(provider)), "jwks_uri", Unavailable)


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_provider_down_then_back(
    provider: Provider,
    validator: TokenValidator,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    provider.mode = mode
    validator.warm()  # does not raise: the SuperLink starts anyway
    assert "identity provider unreachable" in caplog.text
    token = sign(claims_for(provider))
    refused(validator, token, "identity provider unreachable", Unavailable)
    provider.mode = "up"
    assert validator.validate(token).user == "alice"  # no wait: keys were never fetched


def test_provider_not_listening(make_validator: Any, provider: Provider) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        config = make_config(provider, issuer=f"http://127.0.0.1:{port}")
        validator = make_validator(config)
        validator.warm()
        claims = claims_for(provider, iss=config.issuer)
        refused(validator, sign(claims), "identity provider unreachable", Unavailable)


def test_bad_documents(provider: Provider, validator: TokenValidator) -> None:
    for jwks in ({"keys": "none"}, {}, {"keys": [{"kty": "oct", "k": "AAAA", "kid": "h"}]}):
        provider.jwks = jwks
        validator.warm()
        refused(validator, sign(claims_for(provider)), "JWKS", Unavailable)


def test_rotation(provider: Provider, validator: TokenValidator, clock: Clock) -> None:
    validator.warm()
    provider.jwks = {"keys": [ROTATED.jwk()]}
    clock.now += 30  # min_refresh_interval after the last fetch
    assert validator.validate(sign(claims_for(provider), ROTATED)).user == "alice"
    assert provider.fetches["/jwks"] == 2
    assert provider.fetches[DISCOVERY] == 1
    # the old key is gone from the provider, and so from the cache
    refused(validator, sign(claims_for(provider), RSA), "unknown key")


def test_unknown_kids_refetch_at_most_once_per_interval(
    provider: Provider, validator: TokenValidator, clock: Clock
) -> None:
    validator.warm()
    assert provider.fetches["/jwks"] == 1
    clock.now += 60
    refused(validator, sign(claims_for(provider), replace(ROTATED, kid="x1")), "unknown key")
    assert provider.fetches["/jwks"] == 2  # refetched: it may have been a rotation
    clock.now += 29
    refused(validator, sign(claims_for(provider), replace(ROTATED, kid="x2")), "unknown key")
    assert provider.fetches["/jwks"] == 2  # inside the interval: not again
    clock.now += 1
    refused(validator, sign(claims_for(provider), replace(ROTATED, kid="x3")), "unknown key")
    assert provider.fetches["/jwks"] == 3


def test_rotation_inside_the_interval_waits(
    provider: Provider, validator: TokenValidator, clock: Clock
) -> None:
    validator.warm()
    provider.jwks = {"keys": [RSA.jwk(), ROTATED.jwk()]}
    token = sign(claims_for(provider), ROTATED)
    assert validator.validate(token).user == "alice"  # a rotation just after a start: at once
    fetches = provider.fetches["/jwks"]
    provider.jwks = {"keys": [RSA.jwk(), ROTATED.jwk(), EC.jwk()]}
    again = sign(claims_for(provider), EC)
    refused(validator, again, "unknown key")  # a second unknown key inside the interval waits
    assert provider.fetches["/jwks"] == fetches
    clock.now += 30
    assert validator.validate(again).user == "alice"
    assert provider.fetches["/jwks"] == fetches + 1


def test_clock_set_back_allows_a_refetch(
    provider: Provider, validator: TokenValidator, clock: Clock
) -> None:
    validator.warm()
    provider.jwks = {"keys": [ROTATED.jwk()]}
    clock.now -= 3600
    token = sign(claims_for(provider, iat=int(clock.now), exp=int(clock.now) + 60), ROTATED)
    assert validator.validate(token).user == "alice"


def test_refetch_while_the_provider_is_down(
    provider: Provider, validator: TokenValidator, clock: Clock
) -> None:
    validator.warm()
    provider.mode = "503"
    clock.now += 60
    token = sign(claims_for(provider), ROTATED)
    refused(validator, token, "identity provider unreachable", Unavailable)
    assert validator.validate(sign(claims_for(provider))).user == "alice"  # cached keys do


def test_old_keys_are_fetched_again(provider: Provider, make_validator: Any, clock: Clock) -> None:
    validator = make_validator(max_key_age=600.0)
    token = sign(claims_for(provider, exp=int(NOW) + 7200))
    validator.validate(token)
    clock.now += 600
    provider.mode = "503"
    assert validator.validate(token).user == "alice"  # provider down: the cached keys do
    assert provider.fetches["/jwks"] == 2
    clock.now += 30
    provider.mode = "up"
    provider.jwks = {"keys": [EC.jwk()]}  # the provider withdrew the RSA key
    refused(validator, token, "unknown key")
    assert provider.fetches["/jwks"] == 3


def test_private_ca(tls_material: TlsMaterial, make_validator: Any, clock: Clock) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tls_material.trusted.server_cert, tls_material.trusted.server_key)
    served = Provider(jwks={"keys": [RSA.jwk()]})
    server = start(served, tls)
    try:
        trusting = make_validator(make_config(served, ca_certificates=tls_material.trusted.ca_cert))
        assert trusting.validate(sign(claims_for(served))).user == "alice"
        other = make_validator(make_config(served, ca_certificates=tls_material.other.ca_cert))
        refused(other, sign(claims_for(served)), "identity provider unreachable", Unavailable)
    finally:
        stop(server)


# -- threads --------------------------------------------------------------------------------------


def run_in_threads(validator: TokenValidator, tokens: list[str]) -> list[Identity | Exception]:
    barrier = threading.Barrier(len(tokens), timeout=WAIT)

    def call(token: str) -> Identity | Exception:
        barrier.wait()
        try:
            return validator.validate(token)
        except (Unauthenticated, Unavailable) as exc:
            return exc

    with ThreadPoolExecutor(len(tokens)) as pool:
        futures = [pool.submit(call, token) for token in tokens]
        return [future.result(timeout=WAIT) for future in futures]


def test_threads_share_one_fetch(provider: Provider, validator: TokenValidator) -> None:
    tokens = [sign(claims_for(provider, preferred_username=f"u{i}")) for i in range(THREADS)]
    results = run_in_threads(validator, tokens)
    assert [r.user for r in results if isinstance(r, Identity)] == [f"u{i}" for i in range(THREADS)]
    assert provider.fetches == {DISCOVERY: 1, "/jwks": 1}


def test_flood_of_unknown_kids_refetches_once(
    provider: Provider, validator: TokenValidator, clock: Clock
) -> None:
    validator.warm()
    clock.now += 60
    tokens = [sign(claims_for(provider), replace(ROTATED, kid=f"r{i}")) for i in range(THREADS)]
    results = run_in_threads(validator, tokens)
    assert all(isinstance(r, Unauthenticated) and "unknown key" in str(r) for r in results)
    assert provider.fetches["/jwks"] == 2


def test_threads_while_the_provider_is_down(provider: Provider, validator: TokenValidator) -> None:
    provider.mode = "503"
    results = run_in_threads(validator, [sign(claims_for(provider))] * THREADS)
    assert all(isinstance(r, Unavailable) for r in results)
    assert provider.fetches["/jwks"] == 0


def test_given_http_client_is_used_and_left_open(provider: Provider, clock: Clock) -> None:
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(r.url.path)]}) as http:
        validator = TokenValidator(make_config(provider), clock=clock, http=http)
        assert validator.validate(sign(claims_for(provider))).user == "alice"
        validator.close()
        assert not http.is_closed
    assert seen == [DISCOVERY, "/jwks"]
