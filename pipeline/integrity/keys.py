"""Ed25519 signing keys for digests: generate, load, fingerprint.

The fingerprint is the SHA-256 of the raw 32-byte public key, in hex; the key
id carried in each digest is its first 16 hex digits. An auditor gets the
public key file or its fingerprint from the archive's owner out of band, never
from beside the archive.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.errors import ConfigError

KEY_ID_HEX = 16


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex."""
    return hashlib.sha256(public_bytes(key)).hexdigest()


def key_id(key: Ed25519PublicKey) -> str:
    return fingerprint(key)[:KEY_ID_HEX]


def normalize_fingerprint(text: str) -> str:
    """Accept ``SHA256:ab12…`` or ``ab:12:…`` as well as plain hex."""
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"fingerprint {text!r} is not 64 hex digits (a SHA-256)")
    return value


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_bytes(key)).decode()


def verify_signature(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def generate(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    """Write a new key pair: the private key PKCS#8 PEM (mode 0600), the public key PEM."""
    if private_path.exists():
        raise ConfigError(f"{private_path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(
            f"no signing key at {path}; create one with `auditstream digest keygen` or set "
            "AUDITSTREAM_INTEGRITY__SIGNING_KEY"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no public key file at {path}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key
