"""The test OIDC provider (tests/oidc_provider.py) is a real one: the device authorization grant
by raw HTTP, JWT access tokens that validate offline against its /jwks, refresh, revocation,
key rotation across a restart on the same port, and tokens minted with its keys."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from oidc_provider import (
    CLI_CLIENT_ID,
    DEFAULT_AUDIENCE,
    DEVICE_CODE_GRANT,
    OidcProvider,
    OidcProviderError,
    approve,
    deny,
    new_keys,
)

pytestmark = pytest.mark.timeout(120)

SCOPE = "openid offline_access"
REQUIRED = ["iss", "aud", "sub", "exp", "iat", "nbf"]


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    with OidcProvider().start() as provider:
        yield provider


def endpoint(provider: OidcProvider, name: str) -> str:
    return str(provider.discovery()[name])


def verify(provider: OidcProvider, token: str) -> dict[str, Any]:
    """Validate ``token`` as the SuperLink would: offline, against the provider's /jwks."""
    keys = jwt.PyJWKSet.from_dict(provider.jwks())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256"],
        audience=DEFAULT_AUDIENCE,
        issuer=provider.issuer,
        options={"require": REQUIRED},
    )
    return claims


def device_authorization(provider: OidcProvider) -> dict[str, Any]:
    response = httpx.post(
        endpoint(provider, "device_authorization_endpoint"),
        data={"client_id": CLI_CLIENT_ID, "scope": SCOPE},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def poll(provider: OidcProvider, device_code: str) -> httpx.Response:
    return httpx.post(
        endpoint(provider, "token_endpoint"),
        data={
            "client_id": CLI_CLIENT_ID,
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": device_code,
        },
        timeout=10,
    )


def token_grant(provider: OidcProvider, **data: str) -> httpx.Response:
    return httpx.post(
        endpoint(provider, "token_endpoint"), data={"client_id": CLI_CLIENT_ID, **data}, timeout=10
    )


def login(provider: OidcProvider, user: str) -> dict[str, Any]:
    """The whole device flow for ``user``: the token response."""
    started = device_authorization(provider)
    approve(started["verification_uri_complete"], user)
    response = poll(provider, started["device_code"])
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def test_discovery_lists_the_endpoints_the_cli_and_superlink_use(oidc: OidcProvider) -> None:
    discovery = oidc.discovery()
    assert discovery["issuer"] == oidc.issuer == f"http://127.0.0.1:{oidc.port}"
    for name in ("device_authorization_endpoint", "revocation_endpoint", "jwks_uri"):
        assert discovery[name].startswith(oidc.issuer), name
    assert DEVICE_CODE_GRANT in discovery["grant_types_supported"]
    assert "offline_access" in discovery["scopes_supported"]


def test_device_flow_gives_a_jwt_access_token_and_a_refresh_token(oidc: OidcProvider) -> None:
    started = device_authorization(oidc)
    assert started["verification_uri_complete"].startswith(oidc.issuer)
    assert started["interval"] == 1
    assert started["expires_in"] == 600
    pending = poll(oidc, started["device_code"])
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"

    approve(started["verification_uri_complete"], "alice")
    response = poll(oidc, started["device_code"])

    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"]
    assert tokens["id_token"]
    assert tokens["expires_in"] == 3600
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
    claims = verify(oidc, tokens["access_token"])
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["researcher"]
    assert claims["client_id"] == CLI_CLIENT_ID
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"]
    # A device code is used once.
    assert poll(oidc, started["device_code"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("user", "groups"), [("carol", ["admin"]), ("erin", []), ("nobody", [])])
def test_access_tokens_carry_the_users_groups(
    oidc: OidcProvider, user: str, groups: list[str]
) -> None:
    claims = verify(oidc, login(oidc, user)["access_token"])
    assert (claims["sub"], claims["groups"]) == (user, groups)


def test_a_denied_device_code_polls_access_denied(oidc: OidcProvider) -> None:
    started = device_authorization(oidc)
    deny(started["verification_uri_complete"])
    assert poll(oidc, started["device_code"]).json()["error"] == "access_denied"


def test_refresh_gives_a_new_valid_jwt_and_rotates_the_refresh_token(oidc: OidcProvider) -> None:
    first = login(oidc, "bob")
    refreshed = token_grant(oidc, grant_type="refresh_token", refresh_token=first["refresh_token"])

    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.json()
    claims = verify(oidc, tokens["access_token"])
    assert claims["sub"] == "bob"
    assert claims["groups"] == ["researcher"]
    assert claims["jti"] != verify(oidc, first["access_token"])["jti"]
    assert tokens["refresh_token"] != first["refresh_token"]
    again = token_grant(oidc, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert again.status_code == 200, again.text
    # A rotated-out refresh token is refused, and its reuse revokes the whole grant.
    reused = token_grant(oidc, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.json()["error"] == "invalid_grant"
    latest = again.json()["refresh_token"]
    assert token_grant(oidc, grant_type="refresh_token", refresh_token=latest).status_code == 400


def test_a_revoked_refresh_token_is_refused(oidc: OidcProvider) -> None:
    tokens = login(oidc, "alice")
    revoked = httpx.post(
        endpoint(oidc, "revocation_endpoint"),
        data={
            "client_id": CLI_CLIENT_ID,
            "token": tokens["refresh_token"],
            "token_type_hint": "refresh_token",
        },
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text

    refused = token_grant(oidc, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_minted_tokens_validate_against_jwks_and_forged_ones_do_not(oidc: OidcProvider) -> None:
    claims = verify(oidc, oidc.mint(oidc.claims_for("dave")))
    assert (claims["sub"], claims["groups"]) == ("dave", ["viewer"])

    now = int(time.time())
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(oidc, oidc.mint(oidc.claims_for("dave", iat=now - 120, exp=now - 60)))
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(oidc, oidc.mint(oidc.claims_for("dave", nbf=now + 60)))
    with pytest.raises(jwt.InvalidAudienceError):
        verify(oidc, oidc.mint(oidc.claims_for("dave", aud="another-api")))
    with pytest.raises(jwt.InvalidIssuerError):
        verify(oidc, oidc.mint(oidc.claims_for("dave", iss="http://127.0.0.1:1")))
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(oidc, oidc.mint(oidc.claims_for("dave", exp=None)))
    # A foreign key under the provider's kid: the signature does not verify.
    foreign = new_keys(kid=oidc.keys[0]["kid"])[0]
    with pytest.raises(jwt.InvalidSignatureError):
        verify(oidc, oidc.mint(oidc.claims_for("dave"), key=foreign))


def test_restart_on_the_same_port_rotates_the_signing_key() -> None:
    with OidcProvider().start(access_token_ttl=120) as provider:
        issuer, old_kid = provider.issuer, provider.keys[0]["kid"]
        old_token = login(provider, "alice")["access_token"]
        assert jwt.get_unverified_header(old_token)["kid"] == old_kid

        provider.restart(keys=new_keys(kid="rotated-es256", alg="ES256"))

        assert provider.issuer == issuer
        assert [key["kid"] for key in provider.jwks()["keys"]] == ["rotated-es256"]
        assert all("d" not in key for key in provider.jwks()["keys"])  # public keys only
        tokens = login(provider, "carol")
        header = jwt.get_unverified_header(tokens["access_token"])
        assert (header["kid"], header["alg"]) == ("rotated-es256", "ES256")
        claims = verify(provider, tokens["access_token"])
        assert claims["exp"] - claims["iat"] == 120
        with pytest.raises(KeyError):
            verify(provider, old_token)  # its kid is no longer served

        # A rollover: the new key signs, the old one is still published.
        rollover = [*new_keys(kid="next"), *provider.keys]
        provider.restart(keys=rollover)
        assert [key["kid"] for key in provider.jwks()["keys"]] == ["next", "rotated-es256"]
        assert jwt.get_unverified_header(login(provider, "dave")["access_token"])["kid"] == "next"
        assert verify(provider, provider.mint(provider.claims_for("dave"), key=rollover[1]))
        pid = provider.pid
    assert pid is not None
    assert not provider.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_start_failure_raises_with_the_providers_output(oidc: OidcProvider) -> None:
    with pytest.raises(OidcProviderError, match="EADDRINUSE"):
        OidcProvider().start(port=oidc.port)
