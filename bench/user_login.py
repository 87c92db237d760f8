"""A logged-in admin for benchmarks with user login: the tests' real OIDC provider
(tests/oidc, ``npm ci --prefix tests/oidc`` or ``./dev test`` installs it), a
``--user-auth-config`` for the SuperLink, and the device flow played headlessly."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path
from types import TracebackType

from corolla.cli.auth import LoginDetails, TokenSession, device_login, http_client
from corolla.cli.credentials import credentials_path, save_tokens
from corolla.deploy.local import LocalFederation

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from oidc_provider import CLI_CLIENT_ID, OidcProvider, approve  # noqa: E402

ADMIN = "carol"  # the provider's test user in the "admin" group
CONFIG = """\
issuer = "{issuer}"
client-id = "{client_id}"
audience = "corolla-exec"
[roles]
admin = ["admin"]
user = ["researcher"]
"""


class UserLogin:
    """Start the provider, log ``ADMIN`` in; `session` and `cli_env` hand the login on."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.provider = OidcProvider()
        self.tokens_file = workdir / "admin-tokens.json"
        self.superlink_args: list[str] = []
        self.session = TokenSession(self.tokens_file)

    def __enter__(self) -> UserLogin:
        self.provider.start()
        config = self.workdir / "user-auth.toml"
        config.write_text(CONFIG.format(issuer=self.provider.issuer, client_id=CLI_CLIENT_ID))
        self.superlink_args = ["--user-auth-config", str(config)]
        details = LoginDetails(self.provider.issuer, CLI_CLIENT_ID, ("openid", "offline_access"))
        approvals: list[threading.Thread] = []

        def say(line: str) -> None:
            for word in line.split():
                if "user_code=" in word:
                    url = word.rstrip(",)")
                    approvals.append(threading.Thread(target=approve, args=(url, ADMIN)))
                    approvals[-1].start()

        with http_client() as http:
            tokens = device_login(details, http=http, say=say)
        for thread in approvals:
            thread.join(timeout=30)
        save_tokens(self.tokens_file, tokens)
        return self

    def cli_env(self, federation: LocalFederation) -> dict[str, str]:
        """The environment of `flwr` commands logged in as the admin on ``federation``."""
        home = self.workdir / "flwr-home"
        env = {**federation.env, "FLWR_HOME": str(home)}
        name = credentials_path("local", federation.exec).name
        target = home / "credentials" / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(self.tokens_file, target)
        return env

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.provider.stop()
