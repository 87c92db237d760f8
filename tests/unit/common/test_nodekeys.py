"""SuperNode keys: the formats operators make them in, and signatures over requests."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from corolla.common import nodekeys
from corolla.common.errors import InvalidArgument


def test_generated_keys_sign_and_the_public_half_verifies(tmp_path: Path) -> None:
    private, public = tmp_path / "node.key", tmp_path / "node.key.pub"
    fingerprint = nodekeys.generate(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = nodekeys.load_private_key(private)
    verifier = nodekeys.load_public_key(public.read_bytes())
    assert nodekeys.fingerprint(nodekeys.public_der(verifier)) == fingerprint
    payload = nodekeys.signed_payload("/svc/M", "1.0", "n", b"body", "5", "")
    signature = nodekeys.sign(key, payload)
    assert nodekeys.verify(verifier, signature, payload)
    tampered = nodekeys.signed_payload("/svc/M", "1.0", "n", b"bodY", "5", "")
    assert not nodekeys.verify(verifier, signature, tampered)


def test_openssh_and_sec1_formats_load(tmp_path: Path) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    openssh = ed.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    (tmp_path / "id").write_bytes(openssh)
    line = ed.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    loaded = nodekeys.load_private_key(tmp_path / "id")
    assert nodekeys.public_der(loaded.public_key()) == nodekeys.public_der(
        nodekeys.load_public_key(line + b" comment\n")
    )
    p256 = ec.generate_private_key(ec.SECP256R1())
    sec1 = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "ec.pem").write_bytes(sec1)
    assert isinstance(nodekeys.load_private_key(tmp_path / "ec.pem"), ec.EllipticCurvePrivateKey)


def test_the_documented_ssh_keygen_command_makes_a_usable_key(tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
        check=True,
        timeout=30,
    )
    key = nodekeys.load_private_key(tmp_path / "k")
    public = nodekeys.load_public_key((tmp_path / "k.pub").read_bytes())
    assert nodekeys.public_der(key.public_key()) == nodekeys.public_der(public)


def test_other_key_types_are_refused_clearly(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(InvalidArgument, match="ECDSA P-256 or Ed25519"):
        nodekeys.load_private_key(tmp_path / "rsa.pem")
    with pytest.raises(InvalidArgument, match="cannot read"):
        nodekeys.load_private_key(tmp_path / "missing.pem")
    with pytest.raises(InvalidArgument, match="not a PEM or OpenSSH public key"):
        nodekeys.load_public_key(b"garbage")
