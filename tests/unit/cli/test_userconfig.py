"""The user's federations in ``$FLWR_HOME/config.toml``, simulations, and the resolution order
of app federations, user federations and the built-in ``local-simulation``."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tls_helpers import TlsMaterial

from corolla.cli.config import (
    BUILT_IN,
    DEFAULT_NUM_SUPERNODES,
    Federation,
    resolve_federation,
    resolve_user_federation,
)
from corolla.cli.userconfig import (
    LOCAL_SIMULATION,
    load_user_config,
    parse_user_config,
    user_config_path,
)
from corolla.common.errors import InvalidArgument
from corolla.fab import AppConfig, FederationConfig, FederationsConfig


@pytest.fixture(autouse=True)
def flwr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FLWR_HOME (never the developer's ~/.flwr)."""
    home = tmp_path / "home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    return home


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


def write_user_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def app(federations: dict[str, FederationConfig] | None, default: str | None = None) -> AppConfig:
    feds = None if federations is None else FederationsConfig(default, federations)
    return AppConfig(
        name="app",
        version="1.0.0",
        publisher="acme",
        serverapp="pkg.server:app",
        clientapp="pkg.client:app",
        run_config={},
        federations=feds,
    )


APP_FEDS = {
    "local": FederationConfig("local", address="127.0.0.1:9093", insecure=True),
    "shared": FederationConfig("shared", address="app.example:9093", insecure=True),
}
USER_CONFIG = """
[superlink.prod]
address = "superlink.example.org:9093"
insecure = true

[superlink.shared]
address = "user.example:9093"
insecure = true

[superlink.sim]
options.num-supernodes = 4
options.backend.client-resources.num-cpus = 2
"""


# -- where the file is ---------------------------------------------------------------------------


def test_the_file_is_in_flwr_home(flwr_home: Path) -> None:
    assert user_config_path() == flwr_home / "config.toml"


def test_without_flwr_home_the_file_is_in_dot_flwr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FLWR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert user_config_path() == tmp_path / "user" / ".flwr" / "config.toml"


def test_a_missing_file_means_no_user_federations_and_is_not_created(flwr_home: Path) -> None:
    user = load_user_config()
    assert (user.exists, user.default, user.federations) == (False, None, {})
    fed = resolve_user_federation(None)
    assert (fed.name, fed.num_supernodes, fed.source) == (LOCAL_SIMULATION, 10, BUILT_IN)
    assert not flwr_home.exists()


# -- which federation ------------------------------------------------------------------------------


def test_a_federation_only_in_the_user_config(flwr_home: Path, app_dir: Path) -> None:
    path = write_user_config(flwr_home, USER_CONFIG)
    fed = resolve_federation(app(APP_FEDS, "local"), "prod", app_dir)
    assert (fed.name, fed.address, fed.insecure) == ("prod", "superlink.example.org:9093", True)
    assert fed.source == str(path)
    assert not fed.is_simulation


def test_the_app_wins_over_the_user_config(flwr_home: Path, app_dir: Path) -> None:
    write_user_config(flwr_home, USER_CONFIG)
    fed = resolve_federation(app(APP_FEDS), "shared", app_dir)
    assert (fed.address, fed.source) == ("app.example:9093", str(app_dir / "pyproject.toml"))


def test_the_user_config_is_not_read_when_the_app_has_the_federation(
    flwr_home: Path, app_dir: Path
) -> None:
    write_user_config(flwr_home, "[superlink\n")
    assert resolve_federation(app(APP_FEDS), "local", app_dir).name == "local"
    with pytest.raises(InvalidArgument, match="invalid TOML"):
        resolve_federation(app(APP_FEDS), "prod", app_dir)


@pytest.mark.parametrize(
    ("app_default", "user_default", "expected"),
    [
        ("local", "prod", ("local", "127.0.0.1:9093")),  # the app's default first
        (None, "prod", ("prod", "superlink.example.org:9093")),  # then the user's default
        (None, "shared", ("shared", "app.example:9093")),  # a chosen name: the app's first
        (None, None, (LOCAL_SIMULATION, "")),  # then the built-in
    ],
)
def test_the_default_order(
    flwr_home: Path,
    app_dir: Path,
    app_default: str | None,
    user_default: str | None,
    expected: tuple[str, str],
) -> None:
    default = "" if user_default is None else f'[superlink]\ndefault = "{user_default}"\n'
    write_user_config(flwr_home, default + USER_CONFIG)
    fed = resolve_federation(app(APP_FEDS, app_default), None, app_dir)
    assert (fed.name, fed.address) == expected


def test_an_app_without_federations_and_no_user_config_runs_a_local_simulation(
    app_dir: Path,
) -> None:
    fed = resolve_federation(app(None), None, app_dir)
    assert fed == Federation(
        name=LOCAL_SIMULATION,
        address="",
        insecure=False,
        num_supernodes=DEFAULT_NUM_SUPERNODES,
        source=BUILT_IN,
    )
    assert resolve_federation(app(APP_FEDS), LOCAL_SIMULATION, app_dir) == fed


def test_local_simulation_can_be_redefined(flwr_home: Path, app_dir: Path) -> None:
    write_user_config(flwr_home, "[superlink.local-simulation]\noptions.num-supernodes = 3\n")
    assert resolve_user_federation(LOCAL_SIMULATION).num_supernodes == 3
    mine = FederationConfig(LOCAL_SIMULATION, options={"options": {"num-supernodes": 7}})
    fed = resolve_federation(app({LOCAL_SIMULATION: mine}), None, app_dir)
    assert fed.num_supernodes == 7


def test_resolve_user_federation_by_name_and_default(flwr_home: Path) -> None:
    path = write_user_config(flwr_home, '[superlink]\ndefault = "sim"\n' + USER_CONFIG)
    assert resolve_user_federation("prod").address == "superlink.example.org:9093"
    fed = resolve_user_federation(None)
    assert (fed.name, fed.num_supernodes, fed.source) == ("sim", 4, str(path))
    other = write_user_config(flwr_home / "other", "[superlink.x]\naddress = 'h:1'\n")
    assert resolve_user_federation(None, user_config_file=other).name == LOCAL_SIMULATION
    assert resolve_user_federation("x", user_config_file=other).address == "h:1"


def test_an_unknown_federation_lists_both_places(flwr_home: Path, app_dir: Path) -> None:
    path = write_user_config(flwr_home, USER_CONFIG)
    with pytest.raises(InvalidArgument) as info:
        resolve_federation(app(APP_FEDS), "nope", app_dir)
    assert str(info.value) == (
        f"unknown federation 'nope': not in {app_dir / 'pyproject.toml'} (available: local, "
        f"shared), not in {path} (available: prod, shared, sim), and not built in "
        "(only 'local-simulation' is)"
    )
    with pytest.raises(InvalidArgument, match=r"not in .*config.toml \(available: prod, shared"):
        resolve_user_federation("nope")


def test_an_unknown_federation_without_a_user_config(flwr_home: Path, app_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"config.toml \(no such file\)") as info:
        resolve_federation(app(None), "prod", app_dir)
    assert "(available: none)" in str(info.value)
    assert "\n" not in str(info.value)


# -- simulations ---------------------------------------------------------------------------------


def test_a_simulation_has_nodes_options_and_no_address(flwr_home: Path) -> None:
    write_user_config(flwr_home, USER_CONFIG)
    fed = resolve_user_federation("sim")
    assert fed.is_simulation and fed.address == ""
    assert fed.num_supernodes == 4
    assert fed.options == {"options.backend.client-resources.num-cpus": 2}
    with pytest.raises(InvalidArgument) as info:
        fed.require_address("`flwr ls`")
    assert str(info.value) == (
        "federation 'sim' is a simulation (options.num-supernodes = 4); `flwr ls` needs a "
        "federation with an 'address' (a SuperLink Exec API)"
    )
    assert resolve_user_federation("prod").require_address() == "superlink.example.org:9093"


def test_a_pyproject_simulation(app_dir: Path) -> None:
    sim = FederationConfig("sim", options={"options": {"num-supernodes": 5, "x": "y"}})
    fed = resolve_federation(app({"sim": sim}), "sim", app_dir)
    assert (fed.num_supernodes, fed.address, fed.options) == (5, "", {"options.x": "y"})


def test_a_pyproject_federation_may_keep_num_supernodes_beside_its_address(app_dir: Path) -> None:
    both = FederationConfig("both", address="h:1", options={"options": {"num-supernodes": 2}})
    fed = resolve_federation(app({"both": both}), "both", app_dir)
    assert (fed.is_simulation, fed.options) == (False, {"options.num-supernodes": 2})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'address = "h:1"\noptions.num-supernodes = 2\n',
            "has both an 'address' (a SuperLink Exec API) and 'options.num-supernodes' "
            "(a simulation); keep one",
        ),
        (
            "options.backend.x = 1\n",
            "has no 'address' (a SuperLink Exec API) and no 'options.num-supernodes' "
            "(a simulation)",
        ),
        ("", "has no 'address'"),
        ("options.num-supernodes = 0\n", "'options.num-supernodes' must be a positive integer"),
        ('options.num-supernodes = "x"\n', "must be a positive integer, got 'x'"),
        ("options.num-supernodes = true\n", "must be a positive integer, got True"),
        ("options.num-supernodes = 2.0\n", "must be a positive integer, got 2.0"),
        (
            'options.num-supernodes = 2\nroot-certificates = "ca.pem"\n',
            "is a simulation (no 'address'): 'root-certificates' apply only to a SuperLink",
        ),
        ("options.num-supernodes = 2\ninsecure = true\n", "'insecure' apply only"),
        ("options.x = [1]\naddress = 'h:1'\n", "'options.x' must be an int, float, str or bool"),
    ],
)
def test_bad_federations_in_the_user_config(flwr_home: Path, table: str, message: str) -> None:
    path = write_user_config(flwr_home, f"[superlink.f]\n{table}")
    with pytest.raises(InvalidArgument) as info:
        resolve_user_federation("f")
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("num", [0, -1, "3"])
def test_bad_num_supernodes_in_a_pyproject(app_dir: Path, num: object) -> None:
    sim = FederationConfig("sim", options={"options": {"num-supernodes": num}})
    with pytest.raises(InvalidArgument, match=r"'sim' in .*pyproject.toml: 'options.num-super"):
        resolve_federation(app({"sim": sim}), "sim", app_dir)


def test_a_federation_object_keeps_its_invariants() -> None:
    with pytest.raises(ValueError, match="needs an address or num_supernodes"):
        Federation(name="f", address="", insecure=False)
    with pytest.raises(ValueError, match="a simulation has"):
        Federation(name="f", address="h:1", insecure=False, num_supernodes=2)
    with pytest.raises(ValueError, match="a simulation has"):
        Federation(name="f", address="", insecure=False, num_supernodes=0)
    with pytest.raises(ValueError, match="a simulation has"):
        Federation(name="f", address="", insecure=True, num_supernodes=2)


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)  # never "num-supernodes"
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(st.integers(min_value=1, max_value=10**6), st.dictionaries(_KEYS, _SCALARS, max_size=5))
def test_any_simulation_round_trips(flwr_home: Path, num: int, options: dict[str, object]) -> None:
    doc = {"superlink": {"s": {"options": {"num-supernodes": num, "extra": options}}}}
    write_user_config(flwr_home, tomli_w.dumps(doc))
    fed = resolve_user_federation("s")
    assert fed.num_supernodes == num
    assert fed.options == {f"options.extra.{key}": value for key, value in options.items()}


# -- paths ---------------------------------------------------------------------------------------


def test_paths_are_relative_to_the_config_file(
    flwr_home: Path, app_dir: Path, tls_material: TlsMaterial
) -> None:
    certs = tls_material.trusted
    cli = certs.client("cli")
    (flwr_home / "certs").mkdir(parents=True)
    for source in (certs.ca_cert, cli.cert, cli.key):
        (flwr_home / "certs" / source.name).write_bytes(source.read_bytes())
    write_user_config(
        flwr_home,
        "[superlink.mtls]\n"
        'address = "link.example:9093"\n'
        f'root-certificates = "certs/{certs.ca_cert.name}"\n'
        f'client-certificate = "certs/{cli.cert.name}"\n'
        f'client-key = "certs/{cli.key.name}"\n',
    )
    fed = resolve_federation(app(APP_FEDS), "mtls", app_dir)
    assert fed.root_certificates == certs.ca_cert.read_bytes()
    assert fed.client_tls is not None
    assert fed.client_tls.certificate_chain == cli.cert.read_bytes()
    assert fed.options == {}


def test_a_missing_certificate_names_the_path_beside_the_config(flwr_home: Path) -> None:
    write_user_config(flwr_home, '[superlink.tls]\naddress = "h:1"\nroot-certificates = "ca.pem"\n')
    with pytest.raises(InvalidArgument, match=f"cannot read {flwr_home / 'ca.pem'}"):
        resolve_user_federation("tls")


# -- a broken file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[superlink\n", "invalid TOML"),
        ("[other]\n", "unknown key 'other' (only [superlink] is read)"),
        ("superlink = 3\n", "'superlink' must be a table"),
        ("[superlink]\ndefault = 3\n", "'superlink.default' must be a non-empty string"),
        ('[superlink]\ndefault = "nope"\n', "names unknown federation 'nope'"),
        ('[superlink]\nprod = "h:1"\n', "unknown key 'superlink.prod'"),
        ("[superlink.p]\nadress = 'h:1'\n", "'superlink.p.adress' is an unknown key"),
        ("[superlink.p]\naddress = 5\n", "'superlink.p.address' must be a non-empty string"),
        ("[superlink.p]\naddress = 'h:1'\ninsecure = 'yes'\n", "'superlink.p.insecure'"),
        ("[superlink.p]\naddress = 'h:1'\noptions = 3\n", "'superlink.p.options' must be a"),
        ("[superlink.p]\naddress = 'h:1'\nclient-key = 1\n", "'superlink.p.client-key' must"),
    ],
)
def test_a_broken_file_is_refused_naming_the_file_and_key(
    flwr_home: Path, text: str, message: str
) -> None:
    path = write_user_config(flwr_home, text)
    with pytest.raises(InvalidArgument) as info:
        resolve_user_federation(None)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_default_may_name_the_built_in(tmp_path: Path) -> None:
    user = parse_user_config('[superlink]\ndefault = "local-simulation"\n', path=tmp_path / "c")
    assert user.default_name == LOCAL_SIMULATION


def test_an_unreadable_file_is_refused(flwr_home: Path) -> None:
    (flwr_home / "config.toml").mkdir(parents=True)  # a directory: cannot be read as a file
    with pytest.raises(InvalidArgument, match=r"config.toml: cannot read"):
        load_user_config()
