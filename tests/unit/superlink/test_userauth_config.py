"""`--user-auth-config FILE`: parsing TOML and YAML, every refusal, and the role mapping."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_helpers import TlsMaterial

from corolla.common.errors import InvalidArgument
from corolla.superlink.userauth import Role, UserAuthConfig, load_user_auth_config

EXAMPLE_TOML = """\
issuer = "http://127.0.0.1:8080"
client-id = "flwr-cli"
audience = "corolla-exec"
scopes = ["openid", "offline_access"]
user-claim = "preferred_username"
roles-claim = "realm_access.roles"
default-role = "read-only"
leeway = 10
[roles]
admin = ["admin"]
user = ["researcher", "student"]
read-only = ["viewer"]
"""
EXAMPLE_YAML = """\
issuer: http://127.0.0.1:8080
client-id: flwr-cli
audience: corolla-exec
scopes: [openid, offline_access]
user-claim: preferred_username
roles-claim: realm_access.roles
default-role: read-only
leeway: 10
roles:
  admin: [admin]
  user: [researcher, student]
  read-only: [viewer]
"""
MINIMAL = {
    "issuer": "https://idp.example.org/realms/fl",
    "client-id": "flwr-cli",
    "audience": "corolla-exec",
    "roles": {"user": ["researcher"]},
}


def write(tmp_path: Path, data: dict[str, Any], suffix: str = ".toml") -> Path:
    file = tmp_path / f"userauth{suffix}"
    if suffix == ".toml":
        file.write_text(tomli_w.dumps(data), encoding="utf-8")
    else:
        file.write_text(yaml.safe_dump(data), encoding="utf-8")
    return file


def refused(file: Path, *words: str) -> str:
    """The one-line message of the refusal of ``file``; it names the file and ``words``."""
    with pytest.raises(InvalidArgument) as info:
        load_user_auth_config(file)
    message = str(info.value)
    assert "\n" not in message
    assert str(file) in message
    for word in words:
        assert word in message
    return message


def test_toml_example(tmp_path: Path) -> None:
    file = tmp_path / "auth.toml"
    file.write_text(EXAMPLE_TOML, encoding="utf-8")
    config = load_user_auth_config(file)
    assert config == UserAuthConfig(
        issuer="http://127.0.0.1:8080",
        client_id="flwr-cli",
        audience="corolla-exec",
        scopes=("openid", "offline_access"),
        user_claim="preferred_username",
        roles_claim="realm_access.roles",
        roles={
            Role.ADMIN: frozenset({"admin"}),
            Role.USER: frozenset({"researcher", "student"}),
            Role.READ_ONLY: frozenset({"viewer"}),
        },
        default_role=Role.READ_ONLY,
        leeway=10.0,
    )
    assert isinstance(config.leeway, float)
    assert config.default_role is Role.READ_ONLY
    hash(config)  # frozen and hashable, though it holds a mapping


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_example_equals_toml(tmp_path: Path, suffix: str) -> None:
    toml_file = tmp_path / "auth.toml"
    toml_file.write_text(EXAMPLE_TOML, encoding="utf-8")
    yaml_file = tmp_path / f"auth{suffix}"
    yaml_file.write_text(EXAMPLE_YAML, encoding="utf-8")
    assert load_user_auth_config(yaml_file) == load_user_auth_config(toml_file)


def test_defaults(tmp_path: Path) -> None:
    config = load_user_auth_config(write(tmp_path, MINIMAL))
    assert config.scopes == ("openid", "offline_access")
    assert config.user_claim == "sub"
    assert config.roles_claim == "groups"
    assert config.default_role is None
    assert config.leeway == 30.0
    assert config.ca_certificates is None
    assert config.algorithms == ("RS256", "ES256", "PS256", "EdDSA")


def test_default_role_alone_is_enough(tmp_path: Path) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "roles"} | {"default-role": "user"}
    config = load_user_auth_config(write(tmp_path, data))
    assert config.roles == {}
    assert config.roles_for({"groups": ["anything"]}) == {Role.USER}


def test_no_role_for_anyone_is_refused(tmp_path: Path) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "roles"}
    refused(write(tmp_path, data), "roles", "default-role")
    refused(write(tmp_path, data | {"roles": {"admin": []}}), "roles")


def test_ca_certificates_relative_to_the_file(tmp_path: Path, tls_material: TlsMaterial) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "ca.pem").write_bytes(tls_material.trusted.ca_cert.read_bytes())
    config = load_user_auth_config(write(conf_dir, MINIMAL | {"ca-certificates": "ca.pem"}))
    assert config.ca_certificates == conf_dir / "ca.pem"
    absolute = str(tls_material.trusted.ca_cert)
    config = load_user_auth_config(write(tmp_path, MINIMAL | {"ca-certificates": absolute}))
    assert config.ca_certificates == tls_material.trusted.ca_cert


def test_ca_certificates_missing_or_not_pem(tmp_path: Path) -> None:
    refused(write(tmp_path, MINIMAL | {"ca-certificates": "nope.pem"}), "ca-certificates")
    (tmp_path / "junk.pem").write_text("not a certificate", encoding="utf-8")
    refused(write(tmp_path, MINIMAL | {"ca-certificates": "junk.pem"}), "ca-certificates")


def test_algorithms_key(tmp_path: Path) -> None:
    config = load_user_auth_config(write(tmp_path, MINIMAL | {"algorithms": ["ES384"]}))
    assert config.algorithms == ("ES384",)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": "red"}, ("'colour'", "known:", "issuer", "roles-claim")),
        ({"client_id": "x"}, ("'client_id'", "did you mean 'client-id'")),
        ({"client-id": 3}, ("client-id", "string")),
        ({"client-id": ""}, ("client-id",)),
        ({"audience": ["a", "b"]}, ("audience",)),
        ({"issuer": 1}, ("issuer",)),
        ({"scopes": "openid"}, ("scopes", "list")),
        ({"scopes": ["openid", 3]}, ("scopes",)),
        ({"scopes": ["open id"]}, ("scopes",)),
        ({"user-claim": ""}, ("user-claim",)),
        ({"roles-claim": ["groups"]}, ("roles-claim",)),
        ({"roles": ["admin"]}, ("roles", "table")),
        ({"roles": {"admin": "admin"}}, ("roles.admin", "list")),
        ({"roles": {"admin": [1]}}, ("roles.admin",)),
        ({"roles": {"admin": [""]}}, ("roles.admin",)),
        ({"roles": {"superuser": ["x"]}}, ("roles.superuser", "'superuser'", "read-only")),
        ({"default-role": "boss"}, ("default-role", "'boss'", "admin, user, read-only")),
        ({"default-role": 1}, ("default-role",)),
        ({"leeway": "30"}, ("leeway", "number")),
        ({"leeway": True}, ("leeway",)),
        ({"leeway": -1}, ("leeway", "0..300")),
        ({"leeway": 300.5}, ("leeway", "0..300")),
        ({"leeway": float("inf")}, ("leeway",)),
        ({"ca-certificates": 5}, ("ca-certificates",)),
        ({"algorithms": ["HS256"]}, ("algorithms", "'HS256'", "refused")),
        ({"algorithms": ["none"]}, ("algorithms", "'none'", "refused")),
        ({"algorithms": ["RS1"]}, ("algorithms", "'RS1'", "known:")),
        ({"algorithms": []}, ("algorithms",)),
        ({"algorithms": "RS256"}, ("algorithms",)),
        ({"issuer": "http://idp.example.org"}, ("issuer", "loopback", "https://")),
        ({"issuer": "http://10.0.0.1:8080"}, ("issuer", "loopback")),
        ({"issuer": "http://localhost.example.org"}, ("issuer", "loopback")),
        ({"issuer": "ftp://idp.example.org"}, ("issuer",)),
        ({"issuer": "idp.example.org"}, ("issuer",)),
        ({"issuer": "https://"}, ("issuer",)),
        ({"issuer": "https://idp.example.org:99999"}, ("issuer",)),
        ({"issuer": "https://idp.example.org/?realm=fl"}, ("issuer", "query")),
        ({"issuer": "https://me:pw@idp.example.org"}, ("issuer", "user name")),
    ],
)
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_refused(
    tmp_path: Path, change: dict[str, Any], words: tuple[str, ...], suffix: str
) -> None:
    refused(write(tmp_path, MINIMAL | change, suffix), *words)


def test_password_in_issuer_is_not_echoed(tmp_path: Path) -> None:
    message = refused(write(tmp_path, MINIMAL | {"issuer": "https://me:s3cret@idp.example"}))
    assert "s3cret" not in message


@pytest.mark.parametrize("key", ["issuer", "client-id", "audience"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != key}
    refused(write(tmp_path, data), key, "missing")


@pytest.mark.parametrize(
    "issuer",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.2/realms/fl",
        "http://localhost:8080/",
        "http://LOCALHOST",
        "http://[::1]:8080",
        "https://idp.example.org/realms/fl",
        "https://10.0.0.1",
    ],
)
def test_issuer_accepted(tmp_path: Path, issuer: str) -> None:
    assert load_user_auth_config(write(tmp_path, MINIMAL | {"issuer": issuer})).issuer == issuer


def test_unreadable_files(tmp_path: Path) -> None:
    refused(tmp_path / "absent.toml", "cannot read")
    (tmp_path / "dir.toml").mkdir()
    refused(tmp_path / "dir.toml", "cannot read")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    refused(tmp_path / "binary.toml", "cannot read")
    (tmp_path / "auth.json").write_text("{}", encoding="utf-8")
    refused(tmp_path / "auth.json", ".toml", ".yaml")


def test_invalid_syntax(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('issuer = "x\n[roles\n', encoding="utf-8")
    refused(tmp_path / "bad.toml", "not valid TOML")
    (tmp_path / "bad.yaml").write_text("issuer: [unclosed\n  roles: {\n", encoding="utf-8")
    refused(tmp_path / "bad.yaml", "not valid YAML")
    for text in ("- a\n- b\n", "", "just text\n"):
        (tmp_path / "notmap.yaml").write_text(text, encoding="utf-8")
        refused(tmp_path / "notmap.yaml", "table")


def test_construction_validates_too() -> None:
    base = {"client_id": "c", "audience": "a", "roles": {Role.USER: frozenset({"x"})}}
    with pytest.raises(InvalidArgument, match="issuer"):
        UserAuthConfig(issuer="http://idp.example.org", **base)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="leeway"):
        UserAuthConfig(issuer="https://i.example", leeway=1e9, **base)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="algorithms"):
        UserAuthConfig(issuer="https://i.example", algorithms=("HS512",), **base)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="roles"):
        UserAuthConfig(
            issuer="https://i.example",
            client_id="c",
            audience="a",
            roles={"boss": frozenset({"x"})},  # type: ignore[dict-item]
        )
    config = UserAuthConfig(
        issuer="https://i.example",
        client_id="c",
        audience="a",
        roles={"admin": {"x"}},  # type: ignore[dict-item]
        default_role="user",  # type: ignore[arg-type]
    )
    assert config.roles == {Role.ADMIN: frozenset({"x"})}
    assert config.default_role is Role.USER
    with pytest.raises(TypeError):
        config.roles[Role.USER] = frozenset()  # type: ignore[index]


# -- roles_for ------------------------------------------------------------------------------------


def config_with(**changes: Any) -> UserAuthConfig:
    base = UserAuthConfig(
        issuer="https://idp.example.org",
        client_id="flwr-cli",
        audience="corolla-exec",
        roles={
            Role.ADMIN: frozenset({"admin"}),
            Role.USER: frozenset({"researcher", "student"}),
            Role.READ_ONLY: frozenset({"viewer"}),
        },
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"groups": ["student"]}, {Role.USER}),
        ({"groups": ["admin", "viewer", "other"]}, {Role.ADMIN, Role.READ_ONLY}),
        ({"groups": "admin"}, {Role.ADMIN}),
        ({"groups": ["Admin"]}, set()),  # exact match
        ({"groups": ["other"]}, set()),
        ({"groups": [1, None, {"x": 1}, "researcher"]}, {Role.USER}),
        ({"groups": 7}, set()),
        ({"groups": {"admin": True}}, set()),
        ({}, set()),
    ],
)
def test_roles_for_list_and_string(claims: dict[str, Any], roles: set[Role]) -> None:
    assert config_with().roles_for(claims) == roles


def test_roles_for_dotted_claim() -> None:
    config = config_with(roles_claim="realm_access.roles")
    assert config.roles_for({"realm_access": {"roles": ["admin", "x"]}}) == {Role.ADMIN}
    assert config.roles_for({"realm_access": {"roles": "viewer"}}) == {Role.READ_ONLY}
    assert config.roles_for({"realm_access": ["roles"]}) == set()
    assert config.roles_for({"realm_access": {}}) == set()
    assert config.roles_for({"groups": ["admin"]}) == set()
    deeper = config_with(roles_claim="resource_access.corolla.roles")
    claims = {"resource_access": {"corolla": {"roles": ["student"]}}}
    assert deeper.roles_for(claims) == {Role.USER}


def test_roles_for_claim_whose_name_has_dots() -> None:
    config = config_with(roles_claim="https://corolla.example/roles")
    assert config.roles_for({"https://corolla.example/roles": ["viewer"]}) == {Role.READ_ONLY}


def test_roles_for_default_role() -> None:
    config = config_with(default_role=Role.READ_ONLY)
    assert config.roles_for({"groups": ["other"]}) == {Role.READ_ONLY}
    assert config.roles_for({}) == {Role.READ_ONLY}
    assert config.roles_for({"groups": ["admin"]}) == {Role.ADMIN}  # default only without match


# -- property: what a file says is what the config holds -----------------------------------------

_words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    client_id=_words,
    audience=_words,
    scopes=st.lists(_words, max_size=4),
    user_claim=_words,
    roles_claim=_words,
    roles=st.dictionaries(
        st.sampled_from(list(Role)),
        st.lists(_words, min_size=1, max_size=4),
        min_size=1,
    ),
    default_role=st.none() | st.sampled_from(list(Role)),
    leeway=st.integers(0, 300) | st.floats(0, 300),
    suffix=st.sampled_from([".toml", ".yaml", ".yml"]),
)
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    client_id: str,
    audience: str,
    scopes: list[str],
    user_claim: str,
    roles_claim: str,
    roles: dict[Role, list[str]],
    default_role: Role | None,
    leeway: float,
    suffix: str,
) -> None:
    data: dict[str, Any] = {
        "issuer": "https://idp.example.org/realms/fl",
        "client-id": client_id,
        "audience": audience,
        "scopes": scopes,
        "user-claim": user_claim,
        "roles-claim": roles_claim,
        "roles": {role.value: values for role, values in roles.items()},
        "leeway": leeway,
    }
    if default_role is not None:
        data["default-role"] = default_role.value
    file = write(tmp_path_factory.mktemp("rt"), data, suffix)
    assert load_user_auth_config(file) == UserAuthConfig(
        issuer="https://idp.example.org/realms/fl",
        client_id=client_id,
        audience=audience,
        scopes=tuple(scopes),
        user_claim=user_claim,
        roles_claim=roles_claim,
        roles={role: frozenset(values) for role, values in roles.items()},
        default_role=default_role,
        leeway=float(leeway),
    )
