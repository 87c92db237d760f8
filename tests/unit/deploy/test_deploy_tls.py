"""`LocalFederation` with tls/mtls: the certificates it makes and what it hands the CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corolla.common.tls import ClientTls
from corolla.deploy.local import CLIENTS, LocalFederation

pytestmark = pytest.mark.timeout(60)


def test_plaintext_stays_the_default(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", exec="127.0.0.1:9")
    assert not fed.secure
    assert fed.federation_settings() == {"address": "127.0.0.1:9", "insecure": True}
    assert fed.certs is None and not (tmp_path / "fed" / "certs").exists()


@pytest.mark.parametrize("mtls", [False, True])
def test_tls_settings_name_files_that_work(tmp_path: Path, mtls: bool) -> None:
    fed = LocalFederation(tmp_path / "fed", exec="127.0.0.1:9", tls=True, mtls=mtls)
    settings = fed.federation_settings()
    assert fed.certs is not None
    assert settings["address"] == "127.0.0.1:9" and "insecure" not in settings
    assert settings["root-certificates"] == str(fed.certs.ca_cert)
    assert set(fed.certs.clients) == set(CLIENTS)
    if mtls:
        cli = fed.client_certificate("cli")
        assert (settings["client-certificate"], settings["client-key"]) == (
            str(cli.cert),
            str(cli.key),
        )
        assert ClientTls.from_files(cli.cert, cli.key).certificate_chain == cli.cert.read_bytes()
    else:
        assert "client-certificate" not in settings
    for pair in fed.certs.clients.values():
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
