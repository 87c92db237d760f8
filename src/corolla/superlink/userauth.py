"""Who may use the Exec API: the OIDC user-login config (``--user-auth-config FILE``).

The file names the identity provider (its issuer), the public client the CLI logs in with
(device flow), the audience every access token must carry, and how the token's claims map to
Corolla roles. It is TOML (``.toml``) or YAML (``.yaml``/``.yml``) with the same kebab-case
keys::

    issuer = "https://idp.example.org/realms/fl"
    client-id = "flwr-cli"
    audience = "corolla-exec"
    roles-claim = "realm_access.roles"
    default-role = "read-only"
    [roles]
    admin = ["fl-admin"]
    user = ["researcher", "student"]

Every problem with the file is an `InvalidArgument` naming the file and the key, on one line.
The tokens themselves are checked by `corolla.superlink.oidc`.
"""

from __future__ import annotations

import math
import ssl
import tomllib
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from corolla.common.errors import InvalidArgument
from corolla.common.net import is_loopback_host

MAX_LEEWAY = 300.0
# Asymmetric JWS algorithms a token may be signed with; "none" and HS* are never accepted.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    READ_ONLY = "read-only"


def _no_roles() -> Mapping[Role, frozenset[str]]:
    return types.MappingProxyType({})


@dataclass(frozen=True)
class UserAuthConfig:
    """The identity provider and the role mapping; validated on construction."""

    issuer: str
    client_id: str
    audience: str
    scopes: tuple[str, ...] = ("openid", "offline_access")
    user_claim: str = "sub"
    # A list of strings or one string; a dotted path reaches into objects ("realm_access.roles").
    roles_claim: str = "groups"
    # Corolla role -> the values of `roles_claim` that grant it.
    roles: Mapping[Role, frozenset[str]] = field(default_factory=_no_roles, hash=False)
    default_role: Role | None = None  # of a user matching no mapping (None: no role)
    leeway: float = 30.0  # clock skew allowed on exp, nbf and iat (s)
    ca_certificates: Path | None = None  # PEM bundle trusted for an https issuer
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")

    def __post_init__(self) -> None:
        check_issuer(self.issuer)
        for key, value in (
            ("client-id", self.client_id),
            ("audience", self.audience),
            ("user-claim", self.user_claim),
            ("roles-claim", self.roles_claim),
        ):
            if not value:
                raise InvalidArgument(f"{key}: must not be empty")
        if any(not scope or any(c.isspace() for c in scope) for scope in self.scopes):
            raise InvalidArgument(f"scopes: each scope must be a word, got {list(self.scopes)}")
        if not math.isfinite(self.leeway) or not 0 <= self.leeway <= MAX_LEEWAY:
            raise InvalidArgument(f"leeway: must be 0..{MAX_LEEWAY:g} seconds, got {self.leeway!r}")
        _check_algorithms(self.algorithms)
        roles = {_role(role, "roles"): frozenset(values) for role, values in self.roles.items()}
        if any(not value for values in roles.values() for value in values):
            raise InvalidArgument("roles: a claim value must not be empty")
        object.__setattr__(self, "roles", types.MappingProxyType(roles))
        if self.default_role is not None:
            object.__setattr__(self, "default_role", _role(self.default_role, "default-role"))

    def roles_for(self, claims: Mapping[str, Any]) -> frozenset[Role]:
        """The roles the claims grant; `default_role` alone if they grant none."""
        granted = claim_values(claims, self.roles_claim)
        roles = frozenset(role for role, values in self.roles.items() if values & granted)
        if not roles and self.default_role is not None:
            return frozenset({self.default_role})
        return roles


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``: a top-level key, else a dotted path into objects; None if absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def claim_values(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    """The strings of a claim holding a list of strings or one string (others are ignored)."""
    value = claim(claims, name)
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list | tuple):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def check_url(url: str, key: str) -> urllib.parse.SplitResult:
    """An http(s) URL with a host; plain http only to this machine (loopback)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidArgument(f"{key}: not a URL: {url!r} ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidArgument(f"{key}: must be an https:// URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(f"{key}: must not hold a user name or password")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InvalidArgument(
            f"{key}: plain http is allowed only for a loopback host (127.0.0.1, ::1, "
            f"localhost); use https://, got {url!r}"
        )
    return parts


def check_issuer(issuer: str) -> None:
    parts = check_url(issuer, "issuer")
    if parts.query or parts.fragment:
        raise InvalidArgument(f"issuer: must have no query or fragment, got {issuer!r}")


def _check_algorithms(algorithms: tuple[str, ...]) -> None:
    if not algorithms:
        raise InvalidArgument("algorithms: name at least one")
    for alg in algorithms:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise InvalidArgument(
                f"algorithms: {alg!r} is refused: tokens must be signed with the provider's "
                "private key"
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise InvalidArgument(
                f"algorithms: unknown algorithm {alg!r} "
                f"(known: {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
            )


# -- the file ------------------------------------------------------------------------------------

_REQUIRED = ("issuer", "client-id", "audience")
_OPTIONAL = (
    "scopes",
    "user-claim",
    "roles-claim",
    "roles",
    "default-role",
    "leeway",
    "ca-certificates",
    "algorithms",
)
_KNOWN = _REQUIRED + _OPTIONAL


def load_user_auth_config(path: Path) -> UserAuthConfig:
    """Read and validate ``path`` (TOML or YAML); every problem is an `InvalidArgument`."""
    try:
        return _from_mapping(_read(path), path.parent)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc}") from exc


def _read(path: Path) -> Mapping[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise InvalidArgument(f"must end in .toml, .yaml or .yml, got {path.name!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read the file: {_one_line(exc)}") from exc
    data: object
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"not valid TOML: {_one_line(exc)}") from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"must hold a table of keys, got {type(data).__name__}")
    return data


def _from_mapping(data: Mapping[str, Any], base: Path) -> UserAuthConfig:
    for key in data:
        if key not in _KNOWN:
            hint = (
                f"did you mean {key.replace('_', '-')!r}? "
                if isinstance(key, str) and key.replace("_", "-") in _KNOWN
                else ""
            )
            raise InvalidArgument(f"unknown key {key!r} ({hint}known: {', '.join(_KNOWN)})")
    for key in _REQUIRED:
        if key not in data:
            raise InvalidArgument(f"{key}: missing (required: {', '.join(_REQUIRED)})")
    values: dict[str, Any] = {
        "issuer": _text(data, "issuer"),
        "client_id": _text(data, "client-id"),
        "audience": _text(data, "audience"),
        "roles": _roles(data),
    }
    if "scopes" in data:
        values["scopes"] = _texts(data["scopes"], "scopes")
    if "user-claim" in data:
        values["user_claim"] = _text(data, "user-claim")
    if "roles-claim" in data:
        values["roles_claim"] = _text(data, "roles-claim")
    if "default-role" in data:
        values["default_role"] = _role(data["default-role"], "default-role")
    if "leeway" in data:
        leeway = data["leeway"]
        if isinstance(leeway, bool) or not isinstance(leeway, int | float):
            raise InvalidArgument(f"leeway: expected a number of seconds, got {leeway!r}")
        values["leeway"] = float(leeway)
    if "ca-certificates" in data:
        values["ca_certificates"] = _ca_certificates(_text(data, "ca-certificates"), base)
    if "algorithms" in data:
        values["algorithms"] = _texts(data["algorithms"], "algorithms")
    return UserAuthConfig(**values)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _texts(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidArgument(f"{key}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _role(value: object, key: str) -> Role:
    if isinstance(value, str):
        try:
            return Role(value)
        except ValueError:
            pass
    raise InvalidArgument(
        f"{key}: unknown role {value!r} (roles: {', '.join(role.value for role in Role)})"
    )


def _roles(data: Mapping[str, Any]) -> Mapping[Role, frozenset[str]]:
    table = data.get("roles", {})
    if not isinstance(table, Mapping):
        raise InvalidArgument(f"roles: expected a table of role = [claim values], got {table!r}")
    roles = {
        _role(name, f"roles.{name}"): frozenset(_texts(values, f"roles.{name}"))
        for name, values in table.items()
    }
    if not any(roles.values()) and data.get("default-role") is None:
        raise InvalidArgument(
            "roles: no role is granted to anyone: map claim values under [roles] or set "
            "default-role"
        )
    return roles


def _ca_certificates(text: str, base: Path) -> Path:
    file = Path(text).expanduser()
    if not file.is_absolute():
        file = base / file
    try:
        ssl.create_default_context(cafile=str(file))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            f"ca-certificates: cannot load {file} as PEM certificates: {_one_line(exc)}"
        ) from exc
    return file


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = ["Role", "UserAuthConfig", "load_user_auth_config"]
