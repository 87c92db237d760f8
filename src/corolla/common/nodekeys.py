"""SuperNode keys and request signatures (both ends of SuperNode authentication).

A SuperNode holds an ECDSA P-256 or Ed25519 private key; the SuperLink's allow-list holds its
public key. Every Fleet request carries, in call metadata, the key's fingerprint, a timestamp,
a random nonce and a signature over

    corolla-fleet-v1, method, timestamp, nonce, sha256(request bytes), node id, run id

(joined by newlines; the last two are the ``corolla-node-id`` / ``corolla-run-id`` metadata
of the object streams, empty otherwise; a streamed object is verified by its content hash).
The SuperLink refuses an unknown key, a timestamp outside its window, a nonce seen inside the
window, and a signature that does not match (a tampered body changes the digest).

Make a key with ``openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out node.key``
and its public half with ``openssl pkey -in node.key -pubout -out node.pub``, or with
``ssh-keygen -t ed25519 -N '' -f node_key`` (public key: ``node_key.pub``), or ``flwr supernode
keygen``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from corolla.common.errors import InvalidArgument
from corolla.common.paths import write_private

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

FINGERPRINT_KEY = "corolla-auth-key"
TIMESTAMP_KEY = "corolla-auth-ts"
NONCE_KEY = "corolla-auth-nonce"
SIGNATURE_KEY = "corolla-auth-sig"
_NODE_ID_KEY = "corolla-node-id"  # same names as common/transfer.py's object-stream metadata
_RUN_ID_KEY = "corolla-run-id"
_DOMAIN = b"corolla-fleet-v1"


def _check_type(key: Any, where: str) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidArgument(f"{where}: an EC key must be on P-256, not {key.curve.name}")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise InvalidArgument(f"{where}: the key must be ECDSA P-256 or Ed25519")


def load_private_key(path: Path) -> PrivateKey:
    """A private key from a PEM (PKCS#8 or SEC1) or OpenSSH file, unencrypted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the private key {path}: {exc}") from exc
    key: Any
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"{path} is not an unencrypted private key: {exc}") from exc
    _check_type(key, str(path))
    return key  # type: ignore[no-any-return]  # narrowed by _check_type


def load_public_key(data: bytes, where: str = "public key") -> PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or one OpenSSH line."""
    text = data.strip()
    key: Any
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_ssh_public_key(text)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"{where} is not a PEM or OpenSSH public key: {exc}") from exc
    _check_type(key, where)
    return key  # type: ignore[no-any-return]  # narrowed by _check_type


def load_public_key_der(der: bytes) -> PublicKey:
    """A public key as the allow-list stores it (DER SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"malformed stored public key: {exc}") from exc
    _check_type(key, "stored public key")
    return key  # type: ignore[return-value]  # narrowed by _check_type


def public_der(key: PublicKey) -> bytes:
    """The canonical form the allow-list stores (DER SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def generate(private_path: Path, public_path: Path) -> str:
    """A new ECDSA P-256 key pair as PEM files (private 0600); returns the fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    write_private(private_path, pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return fingerprint(public_der(public))


def signed_payload(
    method: str, timestamp: str, nonce: str, body: bytes, node_id: str = "", run_id: str = ""
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    parts = (_DOMAIN, method, timestamp, nonce, digest, node_id, run_id)
    return b"\n".join(p if isinstance(p, bytes) else p.encode() for p in parts)


def sign(key: PrivateKey, payload: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def verify(key: PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidArgument("malformed base64 in the authentication metadata") from exc


# -- client side --------------------------------------------------------------------------------


class _Details(grpc.ClientCallDetails):
    """The call's details with the signature metadata added."""

    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str | bytes]]):
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


if TYPE_CHECKING:  # generic in the type stubs only
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor


class SigningInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Signs every call of a channel with the node's key (see the module docstring)."""

    def __init__(self, key: PrivateKey, clock: Callable[[], float]) -> None:
        self._key = key
        self._fingerprint = fingerprint(public_der(key.public_key()))
        self._clock = clock

    def _details(self, details: Any, body: bytes) -> _Details:
        metadata = list(details.metadata or ())
        extra = dict((k, str(v)) for k, v in metadata)
        timestamp = f"{self._clock():.6f}"
        nonce = secrets.token_urlsafe(16)
        payload = signed_payload(
            details.method,
            timestamp,
            nonce,
            body,
            extra.get(_NODE_ID_KEY, ""),
            extra.get(_RUN_ID_KEY, ""),
        )
        metadata += [
            (FINGERPRINT_KEY, self._fingerprint),
            (TIMESTAMP_KEY, timestamp),
            (NONCE_KEY, nonce),
            (SIGNATURE_KEY, b64(sign(self._key, payload))),
        ]
        return _Details(details, metadata)

    @staticmethod
    def _body(request: Any) -> bytes:
        return request if isinstance(request, bytes) else request.SerializeToString()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, self._body(request)), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, self._body(request)), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, b""), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, b""), requests)
