"""Tests for parsing and validating an app's pyproject.toml."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

import corolla.fab
from corolla.common.errors import InvalidArgument
from corolla.fab import (
    AppConfig,
    FederationConfig,
    FederationsConfig,
    load_app_config,
    parse_app_config,
)

MINIMAL = """
[project]
name = "demo"
version = "1.2.3"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "demo.server_app:app"
clientapp = "demo.client_app:app"
"""


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid pyproject document as a dict; tweak it, then dump it with tomli_w."""
    base: dict[str, Any] = {
        "project": {"name": "demo", "version": "1.2.3"},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "acme",
                    "components": {"serverapp": "a.b:c", "clientapp": "a.d:e"},
                }
            }
        },
    }
    base.update(overrides)
    return base


def test_public_api_is_pinned() -> None:
    assert sorted(corolla.fab.__all__) == [
        "AppConfig",
        "BuiltFab",
        "ConfigValue",
        "FabLimits",
        "FederationConfig",
        "FederationsConfig",
        "InstalledApp",
        "build_fab",
        "build_fab_bytes",
        "check_fab_size",
        "fab_filename",
        "inspect_fab",
        "install_fab",
        "load_app_config",
        "parse_app_config",
        "unpack_fab",
        "verify_fab",
    ]


def test_minimal_config() -> None:
    config = parse_app_config(MINIMAL)
    assert config == AppConfig(
        name="demo",
        version="1.2.3",
        publisher="acme",
        serverapp="demo.server_app:app",
        clientapp="demo.client_app:app",
        run_config={},
        federations=None,
    )
    assert parse_app_config(MINIMAL.encode()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]


def test_run_config_is_flattened_with_scalar_types() -> None:
    text = MINIMAL + (
        "[tool.flwr.app.config]\n"
        'rounds = 3\nlr = 0.5\nname = "x"\nflag = true\n'
        "[tool.flwr.app.config.model]\ndepth = 2\n"
        "[tool.flwr.app.config.model.head]\nwidth = 8\n"
    )
    config = parse_app_config(text)
    assert config.run_config == {
        "rounds": 3,
        "lr": 0.5,
        "name": "x",
        "flag": True,
        "model.depth": 2,
        "model.head.width": 8,
    }
    assert type(config.run_config["flag"]) is bool


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("[tool.flwr.app.config]\nxs = [1, 2]\n", "'tool.flwr.app.config.xs'"),
        ("[tool.flwr.app.config]\nwhen = 1979-05-27\n", "'tool.flwr.app.config.when'"),
        ('[tool.flwr.app.config]\n"a.b" = 1\n[tool.flwr.app.config.a]\nb = 2\n', "'a.b'"),
    ],
)
def test_bad_run_config_is_refused(extra: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=r"pyproject\.toml") as info:
        parse_app_config(MINIMAL + extra)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("broken", "fragment"),
    [
        (doc(project={"version": "1"}), "'name' in [project]"),
        (doc(project={"name": "x"}), "'version' in [project]"),
        (doc(project={"name": "", "version": "1"}), "'name' in [project]"),
        (doc(project={"name": 3, "version": "1"}), "'name' in [project]"),
        ({"tool": doc()["tool"]}, "[project]"),
        (doc(tool={}), "[tool.flwr]"),
        (doc(tool={"flwr": {}}), "[tool.flwr.app]"),
        (doc(tool={"flwr": {"app": {"components": {}}}}), "'publisher'"),
        (doc(tool={"flwr": {"app": {"publisher": "p"}}}), "[tool.flwr.app.components]"),
        (
            doc(tool={"flwr": {"app": {"publisher": "p", "components": {"serverapp": "a:b"}}}}),
            "'clientapp'",
        ),
        (doc(tool={"flwr": {"app": {"publisher": "p", "components": "x"}}}), "must be a table"),
    ],
)
def test_missing_or_wrong_keys_are_named(broken: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_app_config(tomli_w.dumps(broken), source="app/pyproject.toml")
    message = str(info.value)
    assert message.startswith("app/pyproject.toml: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "ref",
    ["pkg.mod", "pkg.mod:", ":app", "pkg..mod:app", "pkg.mod:a:b", "1pkg:app", "pkg.class:app"],
)
def test_bad_component_refs_are_refused(ref: str) -> None:
    text = MINIMAL.replace('"demo.server_app:app"', f'"{ref}"')
    with pytest.raises(InvalidArgument, match=r"'serverapp'.*module\.path:attribute"):
        parse_app_config(text)


@pytest.mark.parametrize("ref", ["mod:app", "pkg.sub.mod:app", "m:obj.attr", "_m:_a"])
def test_good_component_refs_are_accepted(ref: str) -> None:
    text = MINIMAL.replace('"demo.client_app:app"', f'"{ref}"')
    assert parse_app_config(text).clientapp == ref


def test_invalid_toml_and_encoding_name_the_file() -> None:
    with pytest.raises(InvalidArgument, match=r"^x/pyproject.toml: invalid TOML"):
        parse_app_config("[project\n", source="x/pyproject.toml")
    with pytest.raises(InvalidArgument, match="not valid UTF-8"):
        parse_app_config(b"\xff\xfe[project]", source="x/pyproject.toml")


def test_federations_are_parsed() -> None:
    text = MINIMAL + (
        "[tool.flwr.federations]\n"
        'default = "remote"\n'
        "[tool.flwr.federations.remote]\n"
        'address = "10.0.0.1:9093"\n'
        'root-certificates = "ca.pem"\n'
        "[tool.flwr.federations.local]\n"
        'address = "127.0.0.1:9093"\ninsecure = true\n'
        "[tool.flwr.federations.sim]\n"
        "options.num-supernodes = 10\n"
    )
    feds = parse_app_config(text).federations
    assert feds == FederationsConfig(
        default="remote",
        federations={
            "remote": FederationConfig(
                name="remote",
                address="10.0.0.1:9093",
                insecure=False,
                options={"root-certificates": "ca.pem"},
            ),
            "local": FederationConfig(name="local", address="127.0.0.1:9093", insecure=True),
            "sim": FederationConfig(name="sim", options={"options": {"num-supernodes": 10}}),
        },
    )


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('default = "nope"\n[tool.flwr.federations.a]\naddress = "h:1"\n', "unknown federation"),
        ("default = 3\n", "'default'"),
        ("a = 1\n", "[tool.flwr.federations.a] must be a table"),
        ('[tool.flwr.federations.a]\naddress = "h:1"\ninsecure = "yes"\n', "'insecure'"),
        ("[tool.flwr.federations.a]\naddress = 5\n", "'address'"),
    ],
)
def test_bad_federations_are_refused(extra: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_app_config(MINIMAL + "[tool.flwr.federations]\n" + extra)
    assert fragment in str(info.value)


def test_load_app_config_reads_the_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"pyproject\.toml: file not found"):
        load_app_config(tmp_path)
    (tmp_path / "pyproject.toml").write_text(MINIMAL)
    assert load_app_config(tmp_path).name == "demo"
    (tmp_path / "pyproject.toml").write_text(MINIMAL.replace("publisher", "publish"))
    with pytest.raises(
        InvalidArgument, match=re.escape(f"{tmp_path}/pyproject.toml: ") + ".*'publisher'"
    ):
        load_app_config(tmp_path)


_keys = st.text(alphabet="abcxyz_-019", min_size=1, max_size=6)
_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.booleans(),
)
_tables = st.recursive(
    st.dictionaries(_keys, _scalars, max_size=4),
    lambda inner: st.dictionaries(_keys, st.one_of(_scalars, inner), max_size=4),
    max_leaves=12,
)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@settings(max_examples=60, deadline=None)
@given(_tables)
def test_run_config_round_trips_through_toml(table: dict[str, Any]) -> None:
    data = doc()
    data["tool"]["flwr"]["app"]["config"] = table
    assert parse_app_config(tomli_w.dumps(data)).run_config == _flatten(table)
