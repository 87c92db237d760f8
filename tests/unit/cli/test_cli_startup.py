"""The ``flwr`` command starts fast: importing it pulls in neither NumPy nor the certificate
parser (each is tens of milliseconds on every call; commands that need them import them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("heavy", ["numpy", "cryptography.x509", "corolla.records"])
def test_the_cli_imports_no_heavy_module_at_start(heavy: str) -> None:
    probe = f"import sys, corolla.cli.main; print({heavy!r} in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "False"
