"""`LocalFederation`: a SuperLink and N SuperNodes as real processes on loopback, free ports.

Each daemon says it is ready, and where it listens, in its ready file
(``workdir/<name>.ready.json``, `--ready-file`); nothing is learned from its log. With
``tls=True`` (or ``mtls=True``: mutual TLS, client certificates everywhere) it makes a
development CA and certificates in ``workdir/certs`` (`corolla.deploy.certs`) and hands every
daemon and app process what it needs; `federation_settings` is what a CLI federation needs.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from corolla.cli.exec_client import ExecClient, TokenSource
from corolla.common import nodekeys
from corolla.common.config import read_ready_file
from corolla.common.errors import DeadlineExceeded, Unavailable
from corolla.common.grpc import create_channel
from corolla.common.tls import ClientTls
from corolla.deploy.certs import CertPaths, KeyPair, generate

# The client certificates of a federation with mutual TLS, one per kind of client.
CLIENTS = ("cli", "supernode", "serverapp", "clientapp")

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: Path | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> dict[str, Any] | None:
        """This process's ready file, once written (a stale one of a previous process: None)."""
        data = None if self.ready_path is None else read_ready_file(self.ready_path)
        return data if data is not None and data.get("pid") == self.process.pid else None


@dataclass
class LocalFederation:
    """Start with `start()`, stop with `stop()` (or use it as a context manager)."""

    workdir: Path
    num_nodes: int = 2
    node_configs: list[str] | None = None
    database: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    isolation: str = "subprocess"
    secret_file: Path | None = None  # isolation "process": the shared AppIo secret
    superlink_args: list[str] = field(default_factory=list)
    supernode_args: list[str] = field(default_factory=list)
    tls: bool = False  # TLS on every API (default: plaintext, --insecure)
    mtls: bool = False  # mutual TLS: every API demands a client certificate (implies tls)
    certs: CertPaths | None = None  # made on start when tls or mtls
    node_auth: bool = False  # SuperNode authentication: a registered key per SuperNode
    # With user login on the SuperLink (--user-auth-config in superlink_args): an admin's
    # login, used by `exec_client()` (registering the SuperNodes' keys, for one).
    exec_auth: TokenSource | None = None
    superlink: Daemon | None = None
    supernodes: list[Daemon] = field(default_factory=list)
    app_processes: list[Daemon] = field(default_factory=list)
    serverappio: str = ""
    fleet: str = ""
    exec: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COROLLA_HOME": str(self.workdir / "home"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def ready_path(self, name: str) -> Path:
        return self.workdir / f"{name}.ready.json"

    def _spawn(self, name: str, args: list[str], ready: bool = False) -> Daemon:
        log_path = self.workdir / f"{name}.log"
        ready_path = self.ready_path(name) if ready else None
        if ready_path is not None:
            ready_path.unlink(missing_ok=True)
            args = [*args, "--ready-file", str(ready_path)]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches the caller, which stops us in order
            )
        return Daemon(name, process, log_path, ready_path)

    def start_superlink(self) -> None:
        database = self.database or str(self.workdir / "state.db")
        self.superlink = self._spawn(
            "superlink",
            [
                "corolla.superlink.main",
                *self._superlink_tls_args(),
                "--database",
                database,
                "--serverappio-api-address",
                "127.0.0.1:0" if not self.serverappio else self.serverappio,
                "--fleet-api-address",
                "127.0.0.1:0" if not self.fleet else self.fleet,
                "--exec-api-address",
                "127.0.0.1:0" if not self.exec else self.exec,
                *self._isolation_args(),
                *(["--enable-supernode-auth"] if self.node_auth else []),
                *self.superlink_args,
            ],
            ready=True,
        )
        ready = _wait_ready(self.superlink)
        self.serverappio, self.fleet, self.exec = (
            str(ready["serverappio"]),
            str(ready["fleet"]),
            str(ready["exec"]),
        )

    def start_supernode(self, index: int, wait: bool = True) -> Daemon:
        config = (
            self.node_configs[index]
            if self.node_configs
            else f"partition-id={index} num-partitions={self.num_nodes}"
        )
        name = f"supernode-{index}"
        node = self._spawn(
            name,
            [
                "corolla.supernode.main",
                *self._supernode_tls_args(),
                *self._node_auth_args(index),
                "--superlink",
                self.fleet,
                "--clientappio-api-address",
                "127.0.0.1:0",
                "--node-config",
                config,
                "--node-id-file",  # a restarted node asks for the same id
                str(self.workdir / f"{name}.node-id"),
                *self._isolation_args(),
                *self.supernode_args,
            ],
            ready=True,
        )
        if wait:
            _wait_ready(node)
        return node

    def _node_auth_args(self, index: int) -> list[str]:
        """The node's key, made and registered with the SuperLink the first time."""
        if not self.node_auth:
            return []
        key = self.workdir / f"supernode-{index}.key"
        if not key.exists():
            nodekeys.generate(key, key.with_name(key.name + ".pub"))
            with self.exec_client() as client:
                client.register_node(key.with_name(key.name + ".pub").read_bytes())
        return ["--auth-supernode-private-key", str(key)]

    def _cli_tls(self) -> tuple[bytes | None, ClientTls | None]:
        if not self.secure:
            return None, None
        certs = self._certificates()
        cli = certs.client("cli") if self.mtls else None
        client = None if cli is None else ClientTls.from_files(cli.cert, cli.key)
        return certs.ca_cert.read_bytes(), client

    def exec_client(self, auth: TokenSource | None = None) -> ExecClient:
        """A client of this federation's Exec API (with the CLI's TLS material, and the user's
        login when ``auth`` is given)."""
        roots, client = self._cli_tls()
        return ExecClient(
            self.exec,
            insecure=not self.secure,
            root_certificates=roots,
            client_tls=client,
            auth=auth or self.exec_auth,
        )

    def channel(self, address: str) -> grpc.Channel:
        """A raw channel to one of the federation's APIs, with the CLI's TLS material (tests
        that speak protobuf directly)."""
        roots, client = self._cli_tls()
        return create_channel(
            address, insecure=not self.secure, root_certificates=roots, client_tls=client
        )

    @property
    def secure(self) -> bool:
        return self.tls or self.mtls

    def _certificates(self) -> CertPaths:
        if self.certs is None:
            self.certs = generate(self.workdir / "certs", clients=CLIENTS)
        return self.certs

    def client_certificate(self, kind: str) -> KeyPair:
        """The client certificate and key of ``cli``, ``supernode``, ``serverapp`` or
        ``clientapp`` (with tls or mtls)."""
        return self._certificates().client(kind)

    def federation_settings(self) -> dict[str, str | bool]:
        """A ``[tool.flwr.federations.<name>]`` table for this federation's Exec API (absolute
        paths, which stay as they are relative to any app directory)."""
        if not self.secure:
            return {"address": self.exec, "insecure": True}
        certs = self._certificates()
        settings: dict[str, str | bool] = {
            "address": self.exec,
            "root-certificates": str(certs.ca_cert),
        }
        if self.mtls:
            cli = certs.client("cli")
            settings |= {"client-certificate": str(cli.cert), "client-key": str(cli.key)}
        return settings

    def _server_args(self) -> list[str]:
        certs = self._certificates()
        args = ["--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key)]
        return [*args, "--ssl-ca-certfile", str(certs.ca_cert)]

    def _client_args(self, kind: str, prefix: str) -> list[str]:
        pair = self.client_certificate(kind)
        return [f"--{prefix}-certfile", str(pair.cert), f"--{prefix}-keyfile", str(pair.key)]

    def _superlink_tls_args(self) -> list[str]:
        if not self.secure:
            return ["--insecure"]
        if not self.mtls:
            return self._server_args()
        mutual = ["--require-client-certificate", *self._client_args("serverapp", "app-client")]
        return [*self._server_args(), *mutual]

    def _supernode_tls_args(self) -> list[str]:
        """Fleet connection and ClientAppIo API (the node serves with the same certificate)."""
        if not self.secure:
            return ["--insecure"]
        certs = self._certificates()
        args = ["--root-certificates", str(certs.ca_cert), *self._server_args()]
        if not self.mtls:
            return args
        args += ["--require-client-certificate", *self._client_args("supernode", "ssl-client")]
        return [*args, *self._client_args("clientapp", "app-client")]

    def _app_tls_args(self, kind: str) -> list[str]:
        """An operator-managed app process (isolation process)."""
        if not self.secure:
            return ["--insecure"]
        args = ["--root-certificates", str(self._certificates().ca_cert)]
        return [*args, *self._client_args(kind, "ssl-client")] if self.mtls else args

    def _isolation_args(self) -> list[str]:
        if self.isolation == "subprocess":
            return []
        if self.secret_file is None:
            self.secret_file = self.workdir / "appio-secret"
            self.secret_file.write_text(secrets.token_urlsafe(32))
            self.secret_file.chmod(0o600)
        return ["--isolation", "process", "--appio-secret-file", str(self.secret_file)]

    def node_id(self, index: int) -> int:
        """The id SuperNode ``index`` registered with (waits for its ready file)."""
        return int(_wait_ready(self.supernodes[index])["node_id"])

    def clientappio_address(self, index: int) -> str:
        """Where app processes reach SuperNode ``index`` (from its ready file)."""
        return str(_wait_ready(self.supernodes[index])["clientappio"])

    def start_app_process(
        self, kind: str, address: str, args: list[str] | None = None, name: str = ""
    ) -> Daemon:
        """An operator-managed ``flwr-serverapp``/``flwr-clientapp`` (isolation process)."""
        module, flag = {
            "serverapp": ("corolla.runtime.serverapp", "--serverappio-api-address"),
            "clientapp": ("corolla.runtime.clientapp", "--clientappio-api-address"),
        }[kind]
        secret = [] if self.secret_file is None else ["--appio-secret-file", str(self.secret_file)]
        name = name or f"{kind}-{len(self.app_processes)}"
        transport = self._app_tls_args(kind)
        daemon = self._spawn(name, [module, flag, address, *transport, *secret, *(args or [])])
        self.app_processes.append(daemon)
        return daemon

    def start_app_processes(self) -> None:
        """One flwr-serverapp and one flwr-clientapp per SuperNode."""
        self.start_app_process("serverapp", self.serverappio)
        for index in range(len(self.supernodes)):
            self.start_app_process("clientapp", self.clientappio_address(index))

    def start(self) -> LocalFederation:
        """Start every process; if that fails or is interrupted, stop those already started."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_superlink()
            self.supernodes = []
            for index in range(self.num_nodes):  # recorded one by one: `stop` finds each
                self.supernodes.append(self.start_supernode(index, wait=False))
            for node in self.supernodes:
                _wait_ready(node)
            if self.isolation == "process":
                self.start_app_processes()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        daemons = [
            *self.app_processes,
            *self.supernodes,
            *([self.superlink] if self.superlink else []),
        ]
        for daemon in daemons:
            terminate(daemon.process)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait, then SIGKILL; always reaps. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=timeout)


def _wait_ready(daemon: Daemon) -> dict[str, Any]:
    """The daemon's ready file once written; raises if it exits first or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready = daemon.ready()
        if ready is not None:
            return ready
        if daemon.process.poll() is not None:
            raise Unavailable(f"{daemon.name} exited early:\n{daemon.output()[-2000:]}")
        time.sleep(0.05)
    raise DeadlineExceeded(f"{daemon.name} not ready after {READY_TIMEOUT:.0f} s")


def app_for_federation(
    app_dir: Path,
    dest: Path,
    exec_address: str,
    name: str = "local",
    settings: Mapping[str, str | bool] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Copy ``app_dir`` to ``dest`` with federation ``name`` pointing at ``exec_address``
    (plaintext), or set to ``settings`` (e.g. `LocalFederation.federation_settings`), and
    ``options`` as its ``options`` table (e.g. ``{"num-supernodes": 4}``: a simulation run)."""
    import shutil
    import tomllib

    import tomli_w

    shutil.copytree(app_dir, dest, ignore=shutil.ignore_patterns("__pycache__", "*.fab", ".venv"))
    pyproject = dest / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    federations = data.setdefault("tool", {}).setdefault("flwr", {}).setdefault("federations", {})
    federations.setdefault("default", name)
    federations[name] = dict(settings or {"address": exec_address, "insecure": True})
    if options:
        federations[name]["options"] = dict(options)
    pyproject.write_text(tomli_w.dumps(data))
    return dest
