"""`flower-superlink` entry point: options, usage errors, --version, the ready file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corolla.common.config import UsageError
from corolla.superlink.config import default_max_concurrent_runs, parse_config
from corolla.superlink.main import main

pytestmark = pytest.mark.timeout(60)
COMMANDS = {
    "flower-superlink": "corolla.superlink.main",
    "flower-supernode": "corolla.supernode.main",
    "flwr-serverapp": "corolla.runtime.serverapp",
    "flwr-clientapp": "corolla.runtime.clientapp",
}


def test_defaults_and_new_options(tmp_path: Path) -> None:
    config = parse_config(["--insecure"], environ={})
    assert config.max_concurrent_runs == default_max_concurrent_runs()
    assert (config.app_start_timeout, config.ready_file, config.tls) == (120.0, None, None)
    config = parse_config(
        [
            "--insecure",
            "--max-concurrent-runs",
            "3",
            "--app-start-timeout",
            "7.5",
            "--ready-file",
            str(tmp_path / "r.json"),
        ],
        environ={},
    )
    assert (config.max_concurrent_runs, config.app_start_timeout) == (3, 7.5)
    assert config.ready_file == tmp_path / "r.json"


def test_environment_and_config_file(tmp_path: Path) -> None:
    file = tmp_path / "corolla.toml"
    file.write_text(
        "[superlink]\nmax-concurrent-runs = 5\ninsecure = true\ndatabase = ':memory:'\n"
    )
    config = parse_config(["--config", str(file)], environ={"COROLLA_MAX_CONCURRENT_RUNS": "4"})
    assert (config.max_concurrent_runs, config.database, config.tls) == (4, ":memory:", None)
    config = parse_config(["--config", str(file), "--max-concurrent-runs", "1"], environ={})
    assert config.max_concurrent_runs == 1


def test_spare_app_process_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_config(["--insecure"], environ={}).spare_app_process  # on by default
    off = parse_config(["--insecure", "--no-spare-app-process"], environ={})
    assert not off.spare_app_process
    env = {"COROLLA_NO_SPARE_APP_PROCESS": "1"}
    assert not parse_config(["--insecure"], environ=env).spare_app_process
    file = tmp_path / "corolla.toml"
    file.write_text("[superlink]\nno-spare-app-process = true\n")
    assert not parse_config(["--insecure", "--config", str(file)], environ={}).spare_app_process
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret-value\n")
    external = ["--insecure", "--isolation", "process", "--appio-secret-file", str(secret)]
    assert not parse_config(external, environ={}).spare_app_process  # operator's processes


def test_compression_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_config(["--insecure"], environ={}).compression == "none"  # off by default
    assert parse_config(["--insecure", "--compression", "zstd"], environ={}).compression == "zstd"
    env = {"COROLLA_COMPRESSION": "zstd"}
    assert parse_config(["--insecure"], environ=env).compression == "zstd"
    file = tmp_path / "corolla.toml"
    file.write_text("[superlink]\ncompression = 'zstd'\n")
    from_file = ["--insecure", "--config", str(file)]
    assert parse_config(from_file, environ={}).compression == "zstd"
    flag_wins = [*from_file, "--compression", "none"]
    assert parse_config(flag_wins, environ=env).compression == "none"
    assert parse_config(from_file, environ={"COROLLA_COMPRESSION": "none"}).compression == "none"
    with pytest.raises(UsageError, match="COROLLA_COMPRESSION: must be one of none, zstd"):
        parse_config(["--insecure"], environ={"COROLLA_COMPRESSION": "gzip"})


def test_a_postgres_database_keeps_its_objects_in_object_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COROLLA_HOME", str(tmp_path))
    url = "postgresql://corolla@db.example/state"
    sqlite = parse_config(["--insecure"], environ={"COROLLA_HOME": str(tmp_path)})
    assert sqlite.object_dir is None  # SQLite: beside its file
    config = parse_config(
        ["--insecure", "--database", url], environ={"COROLLA_HOME": str(tmp_path)}
    )
    assert (config.database, config.object_dir) == (url, tmp_path / "superlink" / "objects")
    env = {"COROLLA_DATABASE": url, "COROLLA_OBJECT_DIR": str(tmp_path / "shared")}
    assert parse_config(["--insecure"], environ=env).object_dir == tmp_path / "shared"


def test_a_database_it_cannot_open_ends_it_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://corolla@/state?host={tmp_path / 'no-server'}&connect_timeout=2"
    result = subprocess.run(
        [sys.executable, "-m", "corolla.superlink.main", "--insecure", "--database", url],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COROLLA_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()[-1]  # one line, after the log's
    assert err.startswith("flower-superlink: state database postgresql://corolla@"), result.stderr
    assert "No such file or directory" in err
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--insecure", "--max-concurrent-runs", "0"], "--max-concurrent-runs: must be at least 1"),
        (["--insecure", "--compression", "lz4"], "--compression: invalid choice: 'lz4'"),
        (["--insecure", "--app-start-timeout", "nan"], "--app-start-timeout: must be a finite"),
        (["--insecure", "--app-attach-timeout", "inf"], "--app-attach-timeout: must be a finite"),
        (["--insecure", "--app-heartbeat-timeout", "-3"], "--app-heartbeat-timeout: must be"),
        (["--insecure", "--fleet-api-address", "9092"], "--fleet-api-address: must be HOST:PORT"),
        ([], "give --ssl-certfile and --ssl-keyfile for TLS, or --insecure"),
        (["--insecure", "--ssl-certfile", "c.pem"], "exclude each other"),
        (["--insecure", "--isolation", "process"], "needs --appio-secret-file"),
        (["--insecure", "--isolation", "elsewhere"], "invalid choice"),
        (["--insecure", "--object-dir", "objects"], "--object-dir is for a PostgreSQL"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError):
        parse_config(argv, environ={})
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("flower-superlink: ") and needle in err and err.count("\n") == 1


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_version_of_every_command(prog: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", COMMANDS[prog], "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COROLLA_APP_TOKEN": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{prog} (Corolla) 0.1.0"


def test_real_superlink_writes_its_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "link.ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corolla.superlink.main",
            "--insecure",
            "--database",
            ":memory:",
            "--serverappio-api-address",
            "127.0.0.1:0",
            "--fleet-api-address",
            "127.0.0.1:0",
            "--exec-api-address",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COROLLA_HOME": str(tmp_path / "home")},
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "no ready file"
        data = json.loads(ready.read_text())
        assert set(data) == {"serverappio", "fleet", "exec", "pid"}
        assert data["pid"] == process.pid
        ports = set()
        for api in ("serverappio", "fleet", "exec"):
            host, _, port = data[api].rpartition(":")
            assert host == "127.0.0.1" and int(port) > 0
            ports.add(port)
        assert len(ports) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    assert code == 0
    assert not ready.exists()  # removed on a clean stop: a stale file would claim readiness
