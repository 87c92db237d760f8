"""Checking the bearer access tokens of Exec calls offline, against the provider's keys.

`TokenValidator` reads the provider's discovery document (``{issuer}/.well-known/
openid-configuration``) and its JWKS once, caches both, and then checks every token locally:
signature, algorithm, issuer, audience, and expiry against an injectable clock with the
configured leeway. A token signed by a key it does not know makes it fetch the JWKS again (the
provider rotated its keys), at most once per ``min_refresh_interval``; keys older than
``max_key_age`` are fetched again when next needed, so a key the provider withdrew stops working.

Fetches happen one at a time: a caller that needs keys while another thread fetches them waits
for that fetch and takes its outcome. A bad token is `Unauthenticated`; a provider that cannot
be reached when keys are needed is `Unavailable`, so a user sees that the problem is not theirs.
Tokens never appear in a message or a log line.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from corolla.common.errors import InvalidArgument, Unauthenticated, Unavailable
from corolla.superlink.userauth import Role, UserAuthConfig, check_url, claim

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds, each phase of each request to the provider
FETCH_WAIT = 30.0  # seconds a call waits for another thread's fetch of the keys
DEFAULT_MAX_KEY_AGE = 3600.0  # seconds before cached keys are fetched again
MAX_DOCUMENT_BYTES = 1 << 20  # discovery document or JWKS
MAX_TOKEN_CHARS = 64 * 1024
_UNREACHABLE = "cannot check the token: identity provider unreachable"
_CURVES = {"ES256": ("P-256",), "ES384": ("P-384",), "ES512": ("P-521",), "EdDSA": ("Ed25519",)}
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True)
class Identity:
    """The user an access token names, and the Corolla roles it grants."""

    user: str  # value of the configured user claim
    roles: frozenset[Role]  # may be empty
    subject: str  # `sub`
    expires_at: float  # `exp`, seconds since the epoch


@dataclass(frozen=True)
class _Keys:
    """The signing keys of one JWKS, as JWK objects, by `kid` (keys without one under None)."""

    by_kid: Mapping[str | None, tuple[Mapping[str, Any], ...]]
    # Keys parsed for an algorithm, filled as tokens need them: (kid, alg, index) -> key.
    parsed: dict[tuple[str | None, str, int], jwt.PyJWK] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(keys) for keys in self.by_kid.values())


@dataclass(frozen=True)
class _State:
    """What the last fetch left; replaced whole, so a reader sees one consistent state."""

    generation: int = 0  # fetch attempts so far
    keys: _Keys | None = None
    fetched_at: float = -math.inf  # clock of the last good fetch
    attempted_at: float = -math.inf  # clock of the last attempt
    # clock of the last fetch for a token of an unknown `kid` (the provider may have rotated
    # its keys): at most one per interval, however many such tokens come; other fetches (at
    # start, for old keys) do not count, so a rotation right after a start is seen at once
    rotation_checked_at: float = -math.inf
    error: str | None = None  # why the last attempt failed (None: it did not)
    jwks_uri: str | None = None


class TokenValidator:
    """Checks access tokens for one `UserAuthConfig`; thread-safe."""

    def __init__(
        self,
        config: UserAuthConfig,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
        min_refresh_interval: float = 30.0,
        max_key_age: float = DEFAULT_MAX_KEY_AGE,
    ) -> None:
        self._config = config
        self._clock = clock
        self._min_refresh_interval = min_refresh_interval
        self._max_key_age = max_key_age
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=REQUEST_TIMEOUT, verify=_verify(config))
        self._state = _State()
        self._fetch_lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP client, if this validator made it."""
        if self._own_http:
            self._http.close()

    def warm(self) -> None:
        """Fetch the discovery document and the keys now; a failure is logged, not raised."""
        self._refresh(self._state, wait=True)

    def validate(self, token: str) -> Identity:
        """The identity of a valid token; `Unauthenticated` (or `Unavailable`) with a reason."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the access token is malformed (not a JWT)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is malformed (not a JWT)") from None
        alg = self._algorithm(header.get("alg"))
        kid = header.get("kid")  # pyjwt has checked it is a string if present
        claims = self._decode(token, self._key(kid, alg), alg)
        self._check_times(claims)
        return self._identity(claims)

    # -- the token ---------------------------------------------------------------------------

    def _algorithm(self, alg: object) -> str:
        if not isinstance(alg, str) or not alg:
            raise Unauthenticated("the access token is malformed (its header names no algorithm)")
        if alg.lower() == "none":
            raise Unauthenticated("the access token is not signed (algorithm 'none' is refused)")
        if alg.upper().startswith("HS"):
            raise Unauthenticated(
                f"the access token is signed with a shared secret ({alg[:16]!r}); only the "
                "provider's public-key signatures are accepted"
            )
        if alg not in self._config.algorithms:
            raise Unauthenticated(
                f"the access token's algorithm {alg[:16]!r} is not accepted "
                f"(accepted: {', '.join(self._config.algorithms)})"
            )
        return alg

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        config = self._config
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                options={
                    # the times are checked against our clock in _check_times
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the access token's signature is wrong: it was altered, or signed by another key"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"the access token was issued by another provider (not {config.issuer!r})"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the access token is not meant for this SuperLink (audience is not "
                f"{config.audience!r})"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise Unauthenticated(
                    f"the access token names no audience (expected {config.audience!r})"
                ) from None
            raise Unauthenticated(f"the access token has no {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(
                f"the access token's algorithm {alg!r} does not fit its key"
            ) from None
        except jwt.InvalidKeyError:
            raise Unauthenticated(
                f"the provider key the access token names is too weak for {alg}"
            ) from None
        except jwt.DecodeError:
            raise Unauthenticated("the access token is malformed (not a JWT)") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the access token is invalid: {_one_line(exc)}") from None

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self._clock(), self._config.leeway
        exp, iat = _time_claim(claims, "exp"), _time_claim(claims, "iat")
        nbf = _time_claim(claims, "nbf") if "nbf" in claims else None
        if now >= exp + leeway:
            raise Unauthenticated("the access token has expired")
        if nbf is not None and now + leeway < nbf:
            raise Unauthenticated("the access token is not valid yet (nbf); check the clocks")
        if now + leeway < iat:
            raise Unauthenticated(
                "the access token is issued in the future (iat); check the clocks"
            )

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        name = self._config.user_claim
        user = claim(claims, name)
        if not isinstance(user, str) or not user:
            raise Unauthenticated(f"the access token has no {name!r} claim naming the user")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the access token's 'sub' claim is empty")
        return Identity(
            user=user,
            roles=self._config.roles_for(claims),
            subject=subject,
            expires_at=float(claims["exp"]),
        )

    # -- the keys ----------------------------------------------------------------------------

    def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        state = self._state
        now = self._clock()
        fetched = False  # by this call: once is enough
        if state.keys is None:
            state, fetched = self._refresh(state, wait=True), True
        elif now - state.fetched_at >= self._max_key_age and self._may_fetch(
            state.attempted_at, now
        ):
            state = self._refresh(state, wait=False)  # busy: the cached keys do meanwhile
            fetched = True
        if state.keys is None:
            raise Unavailable(state.error or f"{_UNREACHABLE} (still fetching its keys)")
        key = _find(state.keys, kid, alg)
        if key is None and not fetched and self._may_fetch(state.rotation_checked_at, now):
            state = self._refresh(state, wait=True, rotation=True)  # rotated keys?
            key = None if state.keys is None else _find(state.keys, kid, alg)
        if key is not None:
            return key
        if state.error is not None:
            raise Unavailable(state.error)
        raise Unauthenticated(
            f"the access token is signed by an unknown key (kid {str(kid)[:64]!r}), not one of the "
            "provider's"
        )

    def _may_fetch(self, last: float, now: float) -> bool:
        """At most one fetch per interval since ``last`` (a clock set back allows one)."""
        elapsed = now - last
        return elapsed >= self._min_refresh_interval or elapsed < 0

    def _refresh(self, seen: _State, *, wait: bool, rotation: bool = False) -> _State:
        """Fetch the keys unless another thread has since `seen`; then the state it left."""
        acquired = (
            self._fetch_lock.acquire(timeout=FETCH_WAIT)
            if wait
            else self._fetch_lock.acquire(blocking=False)
        )
        if not acquired:
            return self._state
        try:
            if self._state.generation != seen.generation:
                return self._state  # fetched while we waited: its outcome is ours
            self._state = self._fetch(self._state, rotation)
            return self._state
        finally:
            self._fetch_lock.release()

    def _fetch(self, state: _State, rotation: bool) -> _State:
        now = self._clock()
        checked = now if rotation else state.rotation_checked_at
        try:
            jwks_uri = state.jwks_uri or self._discover()
            keys = _parse_jwks(self._get_json(jwks_uri, "JWKS"), jwks_uri)
        except Unavailable as exc:
            logger.warning("%s; fetched again when a token needs them", exc)
            return _State(
                generation=state.generation + 1,
                keys=state.keys,
                fetched_at=state.fetched_at,
                attempted_at=now,
                error=str(exc),
                rotation_checked_at=checked,
            )
        kids = sorted(str(kid) for kid in keys.by_kid)
        logger.info("fetched %d signing keys from %s (kid %s)", keys.count, jwks_uri, kids)
        return _State(
            generation=state.generation + 1,
            keys=keys,
            fetched_at=now,
            attempted_at=now,
            jwks_uri=jwks_uri,
            rotation_checked_at=checked,
        )

    def _discover(self) -> str:
        issuer = self._config.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != issuer:
            raise Unavailable(
                f"cannot check the token: the identity provider at {url} names its issuer "
                f"{str(document.get('issuer'))[:200]!r}, not the configured {issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise Unavailable(f"cannot check the token: {url} names no jwks_uri")
        try:
            check_url(jwks_uri, "jwks_uri")
        except InvalidArgument as exc:
            raise Unavailable(f"cannot check the token: {url}: {exc}") from exc
        return jwks_uri

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._http.stream(
                "GET", url, headers={"Accept": "application/json"}, timeout=REQUEST_TIMEOUT
            ) as response:
                if response.status_code != 200:
                    raise Unavailable(
                        f"{_UNREACHABLE}: its {what} at {url} answered HTTP {response.status_code}"
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise Unavailable(
                            f"cannot check the token: the {what} at {url} is larger than "
                            f"{MAX_DOCUMENT_BYTES} bytes"
                        )
        except httpx.HTTPError as exc:
            reason = _one_line(exc) or type(exc).__name__
            raise Unavailable(f"{_UNREACHABLE}: {what} {url}: {reason}") from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise Unavailable(f"cannot check the token: the {what} at {url} is not JSON") from exc
        if not isinstance(document, dict):
            raise Unavailable(f"cannot check the token: the {what} at {url} is not an object")
        return document


def _parse_jwks(document: Mapping[str, Any], url: str) -> _Keys:
    """The signature keys of a JWKS (keys for encryption or of unknown types are left out)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise Unavailable(f"cannot check the token: the JWKS at {url} has no list of keys")
    by_kid: dict[str | None, list[Mapping[str, Any]]] = {}
    for entry in entries:
        if (
            isinstance(entry, dict)
            and entry.get("kty") in ("RSA", "EC", "OKP")
            and entry.get("use", "sig") == "sig"
            and isinstance(entry.get("kid", ""), str)
        ):
            by_kid.setdefault(entry.get("kid"), []).append(entry)
    if not by_kid:
        raise Unavailable(f"cannot check the token: the JWKS at {url} holds no signing key")
    return _Keys({kid: tuple(keys) for kid, keys in by_kid.items()})


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether the JWK may verify ``alg``: its type and curve fit, and its own alg if it has one."""
    if jwk.get("alg", alg) != alg or jwk.get("kty") != _KEY_TYPES.get(alg[:2]):
        return False
    return alg not in _CURVES or jwk.get("crv") in _CURVES[alg]


def _find(keys: _Keys, kid: str | None, alg: str) -> jwt.PyJWK | None:
    """The key named ``kid`` fit for ``alg`` (None: no such key); without a kid, the one key
    fit for ``alg``."""
    if kid is None:
        fits = [
            (name, i)
            for name, js in keys.by_kid.items()
            for i, jwk in enumerate(js)
            if _fits(jwk, alg)
        ]
        if len(fits) != 1:
            raise Unauthenticated(
                f"the access token names no key (kid), and the provider has {len(fits)} keys "
                f"for {alg}, not one"
            )
    else:
        named = keys.by_kid.get(kid, ())
        fits = [(kid, i) for i, jwk in enumerate(named) if _fits(jwk, alg)]
        if not named:
            return None
        if not fits:
            raise Unauthenticated(
                f"the access token's algorithm {alg!r} does not fit the provider key it names"
            )
    name, index = fits[0]
    parsed = keys.parsed.get((name, alg, index))
    if parsed is None:
        try:
            parsed = jwt.PyJWK(dict(keys.by_kid[name][index]), algorithm=alg)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(
                f"the provider key {str(name)[:64]!r} cannot be read for {alg}: {_one_line(exc)}"
            ) from None
        keys.parsed[(name, alg, index)] = parsed  # a race only parses it twice
    return parsed


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"the access token's {name!r} claim is not a time")
    return float(value)


def _verify(config: UserAuthConfig) -> ssl.SSLContext | bool:
    if config.ca_certificates is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(config.ca_certificates))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            f"ca-certificates: cannot load {config.ca_certificates}: {_one_line(exc)}"
        ) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = ["Identity", "TokenValidator"]
