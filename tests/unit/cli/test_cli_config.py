"""`--run-config` parsing and checking, and choosing the federation of `flwr run/ls/log/stop`."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from corolla.cli.commands._shared import connect
from corolla.cli.config import (
    Federation,
    check_overrides,
    parse_pairs,
    parse_run_config,
    resolve_federation,
    split_pairs,
)
from corolla.common.errors import InvalidArgument
from corolla.fab import AppConfig, ConfigValue, FederationConfig, FederationsConfig

# -- --run-config pairs --------------------------------------------------------------------------


def test_pairs_take_toml_values() -> None:
    text = "lr=0.1 name='x' flag=true num-server-rounds=5 title=\"a b\" neg=-2"
    assert parse_pairs(text) == {
        "lr": 0.1,
        "name": "x",
        "flag": True,
        "num-server-rounds": 5,
        "title": "a b",
        "neg": -2,
    }


def test_quoted_values_keep_their_spaces_and_escapes() -> None:
    assert parse_pairs("""a='x  y' b="say \\"hi\\" " c='say "hi"'""") == {
        "a": "x  y",
        "b": 'say "hi" ',
        "c": 'say "hi"',
    }


def test_dotted_keys_and_inline_tables_flatten() -> None:
    assert parse_pairs("a.b=1 c={ d = 'x', e = { f = 2.5 } }") == {
        "a.b": 1,
        "c.d": "x",
        "c.e.f": 2.5,
    }


def test_a_bare_word_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidArgument, match=r"'name=hello'.*name='hello'"):
        parse_pairs("lr=0.1 name=hello")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("novalue", "expected key=value"),
        ("=3", "expected key=value"),
        ("a=", "no value for 'a'"),
        ("a='open", "unterminated '"),
        ("a=[1, 2", r"unterminated \]"),
        ("a=[1,2]", "must be an int, float, str or bool, got list"),
        ("a=1979-05-27", "got date"),
    ],
)
def test_malformed_pairs_are_refused(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_pairs(text)


def test_split_keeps_whitespace_inside_strings_and_brackets() -> None:
    assert split_pairs("  a='x y'\tb={ c = 1 }  d=[ 'e f' ] ") == [
        "a='x y'",
        "b={ c = 1 }",
        "d=[ 'e f' ]",
    ]


_KEYS = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
_VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20),
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_pairs_round_trip_any_toml_scalars(config: dict[str, object]) -> None:
    text = " ".join(
        tomli_w.dumps({key: value}).strip().replace(" = ", "=", 1) for key, value in config.items()
    )
    assert parse_pairs(text) == config


@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=4), st.data())
def test_later_values_win(config: dict[str, object], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(config)))
    first = " ".join(f"{k}={tomli_w.dumps({'v': v})[4:].strip()}" for k, v in config.items())
    merged = parse_run_config([first, f"{key}=true"])
    assert merged == {**config, key: True}


def test_run_config_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "override.toml"
    path.write_text('lr = 0.5\n[model]\nname = "cnn"\nlayers = 3\n')
    assert parse_run_config([str(path), "lr=0.25"]) == {
        "lr": 0.25,
        "model.name": "cnn",
        "model.layers": 3,
    }


def test_run_config_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"cannot read .*missing.toml"):
        parse_run_config([str(tmp_path / "missing.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = \n")
    with pytest.raises(InvalidArgument, match=r"bad.toml: invalid TOML"):
        parse_run_config([str(bad)])


# -- checking against the app's defaults -----------------------------------------------------------

DEFAULTS: dict[str, ConfigValue] = {
    "num-server-rounds": 3,
    "learning-rate": 0.1,
    "name": "x",
    "flag": False,
}


def test_known_keys_of_the_right_type_pass_and_ints_become_floats() -> None:
    checked = check_overrides({"num-server-rounds": 5, "learning-rate": 1, "flag": True}, DEFAULTS)
    assert checked == {"num-server-rounds": 5, "learning-rate": 1.0, "flag": True}
    assert isinstance(checked["learning-rate"], float)


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_overrides({"lr": 0.1}, DEFAULTS)
    assert str(info.value) == (
        "unknown run-config key 'lr' (known keys: flag, learning-rate, name, num-server-rounds)"
    )


def test_unknown_key_when_the_app_has_no_config() -> None:
    with pytest.raises(InvalidArgument, match=r"no \[tool.flwr.app.config\]"):
        check_overrides({"lr": 0.1}, {})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num-server-rounds", 2.5),
        ("num-server-rounds", True),
        ("learning-rate", "0.1"),
        ("learning-rate", False),
        ("flag", 1),
        ("name", 3),
    ],
)
def test_a_value_of_another_type_is_refused(key: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"run-config key '{key}' expects"):
        check_overrides({key: value}, DEFAULTS)  # type: ignore[dict-item]  # on purpose


@given(st.floats(allow_nan=False), st.integers(min_value=-(2**53), max_value=2**53))
def test_numbers_keep_their_value(lr: float, rounds: int) -> None:
    checked = check_overrides({"learning-rate": rounds, "num-server-rounds": rounds}, DEFAULTS)
    assert checked == {"learning-rate": float(rounds), "num-server-rounds": rounds}
    assert check_overrides({"learning-rate": lr}, DEFAULTS) == {"learning-rate": lr}


# -- federations -----------------------------------------------------------------------------------


def app_config(federations: FederationsConfig | None) -> AppConfig:
    return AppConfig(
        name="app",
        version="1.0.0",
        publisher="acme",
        serverapp="pkg.server:app",
        clientapp="pkg.client:app",
        run_config={},
        federations=federations,
    )


FEDERATIONS = FederationsConfig(
    default="local",
    federations={
        "local": FederationConfig("local", address="127.0.0.1:9093", insecure=True),
        "remote": FederationConfig(
            "remote",
            address="link.example:9093",
            options={"root-certificates": "ca.pem", "options": {"num-supernodes": 4}},
        ),
        "sim": FederationConfig("sim", options={"num-supernodes": 10}),
    },
)


def test_the_default_federation_is_used_without_a_name(tmp_path: Path) -> None:
    fed = resolve_federation(app_config(FEDERATIONS), None, tmp_path)
    assert (fed.name, fed.address, fed.insecure) == ("local", "127.0.0.1:9093", True)
    assert fed.root_certificates is None
    assert fed.options == {}


def test_a_named_federation_reads_its_certificates_and_options(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"CERT")
    fed = resolve_federation(app_config(FEDERATIONS), "remote", tmp_path)
    assert (fed.name, fed.address, fed.insecure) == ("remote", "link.example:9093", False)
    assert fed.root_certificates == b"CERT"
    assert fed.options == {"options.num-supernodes": 4}


def test_an_unknown_federation_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgument, match=r"unknown federation 'prod'.*\(available: local, remote, sim\)"
    ):
        resolve_federation(app_config(FEDERATIONS), "prod", tmp_path)


def test_no_name_and_no_default_falls_back_to_the_built_in_simulation(tmp_path: Path) -> None:
    feds = FederationsConfig(default=None, federations=FEDERATIONS.federations)
    fed = resolve_federation(app_config(feds), None, tmp_path)
    assert (fed.name, fed.address, fed.num_supernodes) == ("local-simulation", "", 10)
    assert (fed.is_simulation, fed.source) == (True, "built in")
    # an unknown name still errors, listing what the app defines
    with pytest.raises(
        InvalidArgument, match=r"unknown federation 'prod'.*\(available: local, remote, sim\)"
    ):
        resolve_federation(app_config(feds), "prod", tmp_path)


def test_no_federations_at_all_is_the_built_in_simulation(tmp_path: Path) -> None:
    fed = resolve_federation(app_config(None), None, tmp_path)
    assert (fed.name, fed.num_supernodes, fed.source) == ("local-simulation", 10, "built in")
    with pytest.raises(InvalidArgument, match=r"needs a federation with an 'address'"):
        fed.require_address("flwr login")
    with pytest.raises(
        InvalidArgument,
        match=r"unknown federation 'prod': not in .*pyproject.toml \(available: none\)",
    ):
        resolve_federation(app_config(None), "prod", tmp_path)


def test_a_federation_without_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"'sim' .* has no 'address'"):
        resolve_federation(app_config(FEDERATIONS), "sim", tmp_path)


def test_missing_certificates_and_insecure_conflict(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"cannot read .*ca.pem"):
        resolve_federation(app_config(FEDERATIONS), "remote", tmp_path)
    both = FederationsConfig(
        default=None,
        federations={
            "x": FederationConfig(
                "x", address="h:1", insecure=True, options={"root-certificates": "ca.pem"}
            )
        },
    )
    with pytest.raises(InvalidArgument, match="conflict"):
        resolve_federation(app_config(both), "x", tmp_path)


@pytest.mark.parametrize(
    ("address", "warned"),
    [
        ("127.0.0.1:9093", False),
        ("localhost:9093", False),
        ("[::1]:9093", False),
        ("10.1.2.3:9093", True),
        ("link.example:9093", True),
    ],
)
def test_plaintext_beyond_this_machine_is_warned_about(
    caplog: pytest.LogCaptureFixture, address: str, warned: bool
) -> None:
    with connect(Federation(name="f", address=address, insecure=True)):
        pass
    assert ("without TLS" in caplog.text) is warned
