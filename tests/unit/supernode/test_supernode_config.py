"""`flower-supernode` command line: node config parsing, refusals, backoff schedule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corolla.supernode.config import UsageError, local_address, parse_args, parse_node_config
from corolla.supernode.connection import Backoff
from corolla.supernode.main import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("key=value key2='str'", {"key": "value", "key2": "str"}),
        ("partition-id=0 num-partitions=2", {"partition-id": 0, "num-partitions": 2}),
        ("lr=0.05 flag=true", {"lr": 0.05, "flag": True}),
        ("n='1' m=\"x y\"", {"n": "1", "m": "x y"}),
        ('path="/data/a b" esc="q\\"uote"', {"path": "/data/a b", "esc": 'q"uote'}),
        ("  spaced=1\tother=2  ", {"spaced": 1, "other": 2}),
    ],
)
def test_node_config_values_are_toml(text: str, expected: dict[str, object]) -> None:
    assert parse_node_config(text) == expected


@pytest.mark.parametrize(
    "text", ["novalue", "=1", "k=", "k=[1, 2]", "k='unterminated", "k={a=1}", "k='a'b'"]
)
def test_bad_node_config_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--node-config"):
        parse_node_config(text)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
        ),
        max_size=5,
    )
)
def test_node_config_round_trips_toml_literals(config: dict[str, object]) -> None:
    def literal(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}"'
        return str(value)

    text = " ".join(f"{k}={literal(v)}" for k, v in config.items())
    assert parse_node_config(text) == config


def test_defaults_and_flags() -> None:
    config = parse_args(["--insecure"])
    assert config.superlink == "127.0.0.1:9092"
    assert config.clientappio_address == "0.0.0.0:9094"
    assert (config.heartbeat_interval, config.max_wait, config.isolation) == (
        5.0,
        10.0,
        "subprocess",
    )
    config = parse_args(
        ["--insecure", "--superlink", "link:1", "--node-config", "a=1", "--max-wait", "2"]
    )
    assert (config.superlink, config.node_config, config.max_wait) == ("link:1", {"a": 1}, 2.0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--insecure"),
        (["--insecure", "--isolation", "process"], "--isolation process is not available yet"),
        (["--insecure", "--max-wait", "0"], "--max-wait"),
        (["--insecure", "--superlink", "nohostport"], "HOST:PORT"),
        (["--insecure", "--node-config", "x"], "--node-config"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1


def test_backoff_doubles_to_a_cap_with_jitter() -> None:
    steady = Backoff(rng=lambda: 0.5)
    assert [steady.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    steady.reset()
    assert steady.next_delay() == 0.5
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 1.0)
    assert low.next_delay() == pytest.approx(0.4) and high.next_delay() == pytest.approx(0.6)
    assert all(Backoff().next_delay() <= 10 for _ in range(50))


def test_local_address_for_app_processes() -> None:
    assert local_address("0.0.0.0:9094", 9094) == "127.0.0.1:9094"
    assert local_address("[::]:0", 4321) == "127.0.0.1:4321"
    assert local_address("10.1.2.3:9094", 9094) == "10.1.2.3:9094"
