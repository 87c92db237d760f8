"""A real PostgreSQL server for tests, from the system's packages (Debian's ``postgresql``,
which ``./dev test`` installs when it is missing).

It listens on a unix socket only, in a private temporary directory (no TCP port at all), with
trust authentication for its one superuser, and is tuned for tests (no fsync). As root
(PostgreSQL refuses to run as root) the server runs as the ``postgres`` system user, through
``setpriv``; the server also gets SIGINT (a fast shutdown) if the test process dies without
stopping it. Each test gets a database of its own.

One server serves the whole test session, started when a test first needs it; the root
``conftest.py`` drops each test's databases after it and stops the server at the end of the
session, also when tests fail::

    from postgres_server import database_for

    def test_something(tmp_path: Path) -> None:
        url = database_for(tmp_path)  # postgresql://postgres@/t_...?host=/tmp/corolla-pg-...
        state = PostgresLinkState(url, tmp_path / "objects")
        ...
        assert database_for(tmp_path) == url  # the same database again: a restart finds it

Or a server of its own: ``with PostgresServer().start() as server: url = server.create()``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PORT = 5432  # names the socket file only: the server listens on no TCP port
SUPERUSER = "postgres"
_SETTINGS = {
    "listen_addresses": "",
    "unix_socket_permissions": "0700",
    "fsync": "off",  # a test database need not survive a crash of the machine
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


class PostgresError(Exception):
    """The test server could not be started or used."""


def find_bindir() -> Path:
    """Where initdb, postgres and pg_ctl are: ``$COROLLA_TEST_PG_BINDIR``, else the newest
    ``/usr/lib/postgresql/*/bin`` (Debian), else beside ``initdb`` on the PATH."""
    if named := os.environ.get("COROLLA_TEST_PG_BINDIR"):
        if not (Path(named) / "initdb").exists():
            raise PostgresError(f"COROLLA_TEST_PG_BINDIR={named} has no initdb")
        return Path(named)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).resolve().parent
    raise PostgresError(
        "PostgreSQL is not installed (no initdb): ./dev test installs it, or run "
        "sudo apt-get install -y postgresql"
    )


def _as_server_user(*, pdeathsig: bool = False) -> list[str]:
    """The prefix that runs a command as the server's user (``postgres`` when we are root)."""
    prefix = ["setpriv"]
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresError("as root, the test server needs the user 'postgres'") from None
        prefix += ["--reuid=postgres", "--regid=postgres", "--init-groups"]
    if pdeathsig:
        prefix.append("--pdeathsig=SIGINT")
    return prefix if len(prefix) > 1 else []


class PostgresServer:
    """One ``postgres`` process; `start` returns self, `stop` stops and reaps it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self.directory: Path | None = None

    @property
    def data(self) -> Path:
        assert self.directory is not None, "start the server first"
        return self.directory / "data"

    def url(self, dbname: str = "postgres") -> str:
        """The connection URL of database ``dbname`` (through the server's socket)."""
        assert self.directory is not None, "start the server first"
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.directory}&port={PORT}"

    def start(self, timeout: float = START_TIMEOUT) -> PostgresServer:
        if self._proc is not None:
            raise PostgresError("the server is already running")
        bindir = find_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="corolla-pg-"))
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._initdb(bindir)
            command = [str(bindir / "postgres"), "-D", str(self.data), "-k", str(self.directory)]
            command += ["-p", str(PORT)]
            for name, value in _SETTINGS.items():
                command += ["-c", f"{name}={value}"]
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [*_as_server_user(pdeathsig=True), *command],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._admin = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def log_path(self) -> Path:
        assert self.directory is not None, "start the server first"
        return self.directory / "server.log"

    def _initdb(self, bindir: Path) -> None:
        done = subprocess.run(
            [
                *_as_server_user(),
                str(bindir / "initdb"),
                *("-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"),
                *("--no-locale", "--no-sync"),
            ],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise PostgresError(f"initdb failed ({done.returncode}):\n{output}")

    def _wait_ready(self, timeout: float) -> psycopg.Connection[tuple[object, ...]]:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                return psycopg.connect(self.url(), autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"postgres was not ready in {timeout} s ({exc}):\n{self.log_tail()}"
                    ) from exc
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        if self.directory is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def create(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, name: str) -> None:
        """Drop database ``name``, ending the connections still open to it."""
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _sql(self, statement: str) -> None:
        if self._admin is None:
            raise PostgresError("the server is not running")
        self._admin.execute(statement.encode())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """A fast shutdown (``pg_ctl stop -m fast``), else SIGKILL; reaped; files removed."""
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            subprocess.run(
                [
                    *_as_server_user(),
                    str(find_bindir() / "pg_ctl"),
                    *("stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout))),
                ],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout + 5,
                check=False,
            )
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- the session's server (see the module docstring) ------------------------------------------
_session: PostgresServer | None = None
_failure: PostgresError | None = None  # why the session's server did not start (tried once)
_databases: dict[Path, str] = {}  # a test's directory -> the name of its database


def session_server() -> PostgresServer:
    """The session's server, started on first use (if that fails, every later use fails the
    same way at once)."""
    global _session, _failure
    if _failure is not None:
        raise PostgresError(f"the test server did not start: {_failure}")
    if _session is None:
        try:
            _session = PostgresServer().start()
        except PostgresError as exc:
            _failure = exc
            raise
    return _session


def database_for(directory: Path) -> str:
    """The URL of the database that belongs to ``directory`` (a test's ``tmp_path``): made on
    the first call, the same one on the next (a state reopened there finds its data)."""
    server = session_server()
    if directory not in _databases:
        _databases[directory] = f"t_{uuid.uuid4().hex[:16]}"
        server.create(_databases[directory])
    return server.url(_databases[directory])


def drop_databases() -> None:
    """Drop the databases `database_for` made (after each test)."""
    names = list(_databases.values())
    _databases.clear()
    if _session is not None:
        for name in names:
            _session.drop(name)


def stop_session() -> None:
    """Stop the session's server, if it was started (at the end of the session)."""
    global _session
    server, _session = _session, None
    _databases.clear()
    if server is not None:
        server.stop()
