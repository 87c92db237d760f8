"""`flower-supernode` command line: node config parsing, refusals, backoff schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corolla.common.backoff import Backoff
from corolla.deploy.certs import generate
from corolla.supernode.config import (
    UsageError,
    default_node_id_file,
    local_address,
    parse_args,
    parse_node_config,
)
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
    assert config.clientappio_address == "127.0.0.1:9094"  # --insecure: loopback by default
    assert (config.heartbeat_interval, config.max_wait, config.isolation) == (
        5.0,
        10.0,
        "subprocess",
    )
    assert (config.app_attach_timeout, config.app_heartbeat_timeout) == (120.0, 5.0)
    assert config.insecure and config.clientappio_tls is None and config.appio_secret is None
    config = parse_args(
        ["--insecure", "--superlink", "link:1", "--node-config", "a=1", "--max-wait", "2"]
    )
    assert (config.superlink, config.node_config, config.max_wait) == ("link:1", {"a": 1}, 2.0)


def test_process_isolation_and_tls_flags(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs")
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-long-enough-secret-value\n")
    config = parse_args(
        [
            "--isolation",
            "process",
            "--appio-secret-file",
            str(secret_file),
            "--ssl-certfile",
            str(certs.server_cert),
            "--ssl-keyfile",
            str(certs.server_key),
            "--root-certificates",
            str(certs.ca_cert),
            "--app-attach-timeout",
            "3",
            "--app-heartbeat-timeout",
            "2",
        ]
    )
    assert config.isolation == "process" and not config.insecure
    assert config.appio_secret == "a-long-enough-secret-value"
    assert config.clientappio_tls is not None
    assert config.clientappio_tls.certificate_chain == certs.server_cert.read_bytes()
    assert config.root_certificates == certs.ca_cert.read_bytes()
    assert (config.app_attach_timeout, config.app_heartbeat_timeout) == (3.0, 2.0)
    assert "a-long-enough-secret-value" not in repr(config)
    # Without a root certificate file the Fleet connection uses the system roots.
    tls_only = ["--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key)]
    assert parse_args(tls_only).root_certificates is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--ssl-certfile PATH and --ssl-keyfile PATH (or --insecure"),
        (["--ssl-certfile", "c.pem"], "--ssl-keyfile"),
        (["--insecure", "--ssl-certfile", "c.pem"], "--insecure means no TLS"),
        (["--insecure", "--root-certificates", "ca.pem"], "drop --root-certificates"),
        (["--insecure", "--isolation", "process"], "requires --appio-secret-file PATH"),
        (["--insecure", "--appio-secret-file", "s"], "--isolation process only"),
        (["--insecure", "--isolation", "process", "--appio-secret-file", "/nope"], "secret"),
        (["--insecure", "--app-heartbeat-timeout", "0.5"], "--app-heartbeat-timeout"),
        (["--insecure", "--app-attach-timeout", "0"], "--app-attach-timeout"),
        (["--insecure", "--max-wait", "0"], "--max-wait"),
        (["--insecure", "--superlink", "nohostport"], "HOST:PORT"),
        (["--insecure", "--node-config", "x"], "--node-config"),
        (["--insecure", "--heartbeat-interval", "nan"], "--heartbeat-interval"),
        (["--insecure", "--heartbeat-interval", "inf"], "--heartbeat-interval"),
        (["--insecure", "--max-wait", "-1"], "--max-wait"),
        (["--insecure", "--clientappio-api-address", "h:99999"], "HOST:PORT"),
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


def test_node_id_and_ready_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COROLLA_HOME", str(tmp_path / "home"))
    config = parse_args(["--insecure", "--clientappio-api-address", "127.0.0.1:0"], environ={})
    assert (config.node_id_file, config.ready_file) == (None, None)  # port 0: nothing to key on
    config = parse_args(["--insecure"], environ={})
    expected = default_node_id_file("127.0.0.1:9092", "127.0.0.1:9094")
    assert config.node_id_file == expected
    assert expected is not None and expected.parent == tmp_path / "home" / "supernode"
    assert len(expected.stem) == 16 and expected.suffix == ".node-id"
    assert default_node_id_file("127.0.0.1:9092", "0.0.0.0:9095") != expected
    argv = [
        "--insecure",
        "--node-id-file",
        str(tmp_path / "n"),
        "--ready-file",
        str(tmp_path / "r"),
    ]
    config = parse_args(argv, environ={})
    assert (config.node_id_file, config.ready_file) == (tmp_path / "n", tmp_path / "r")


def test_environment_and_config_file(tmp_path: Path) -> None:
    file = tmp_path / "corolla.toml"
    file.write_text("[supernode]\ninsecure = true\nmax-wait = 4\nheartbeat-interval = 2\n")
    env = {"COROLLA_MAX_WAIT": "3", "COROLLA_SUPERLINK": "[::1]:9092"}
    config = parse_args(["--config", str(file), "--heartbeat-interval", "1"], environ=env)
    assert (config.heartbeat_interval, config.max_wait, config.superlink) == (
        1.0,
        3.0,
        "[::1]:9092",
    )
    assert config.insecure
    with pytest.raises(UsageError, match="COROLLA_MAX_WAIT must be in"):
        parse_args(["--insecure"], environ={"COROLLA_MAX_WAIT": "31"})
    with pytest.raises(UsageError, match="COROLLA_HEARTBEAT_INTERVAL: must be a finite"):
        parse_args(["--insecure"], environ={"COROLLA_HEARTBEAT_INTERVAL": "nan"})


def test_spare_app_process_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_args(["--insecure"], environ={}).spare_app_process  # on by default
    assert not parse_args(["--insecure", "--no-spare-app-process"], environ={}).spare_app_process
    env = {"COROLLA_NO_SPARE_APP_PROCESS": "true"}
    assert not parse_args(["--insecure"], environ=env).spare_app_process
    file = tmp_path / "corolla.toml"
    file.write_text("[supernode]\nno-spare-app-process = true\n")
    assert not parse_args(["--insecure", "--config", str(file)], environ={}).spare_app_process
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret-value\n")
    external = ["--insecure", "--isolation", "process", "--appio-secret-file", str(secret)]
    assert not parse_args(external, environ={}).spare_app_process  # operator's processes


def test_compression_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_args(["--insecure"], environ={}).compression == "none"  # off by default
    assert parse_args(["--insecure", "--compression", "zstd"], environ={}).compression == "zstd"
    env = {"COROLLA_COMPRESSION": "zstd"}
    assert parse_args(["--insecure"], environ=env).compression == "zstd"
    file = tmp_path / "corolla.toml"
    file.write_text("[supernode]\ncompression = 'zstd'\n")
    from_file = ["--insecure", "--config", str(file)]
    assert parse_args(from_file, environ={}).compression == "zstd"
    assert parse_args([*from_file, "--compression", "none"], environ=env).compression == "none"
    assert parse_args(from_file, environ={"COROLLA_COMPRESSION": "none"}).compression == "none"
    file.write_text("[supernode]\ncompression = 'brotli'\n")
    with pytest.raises(UsageError, match=r"\[supernode\] compression: must be one of none, zstd"):
        parse_args(from_file, environ={})
    with pytest.raises(UsageError, match="invalid choice: 'lz4'"):
        parse_args(["--insecure", "--compression", "lz4"], environ={})


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
