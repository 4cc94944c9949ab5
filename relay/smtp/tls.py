"""The listener's TLS context, with a self-signed certificate when none is configured.

Submission clients need TLS before AUTH (RFC 4954 4, RFC 8314); a fresh install has no
certificate yet, so one is generated once into `data_dir/tls` (key mode 0600) for the relay's
host name. Production deployments configure a real one in `[tls]`.
"""

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.config.schema import Config


def _pair(config: Config) -> tuple[str, str]:
    cert, key = config.tls.cert_file, config.tls.key_file
    if not cert:
        cert_path, key_path = ensure_self_signed(
            Path(config.relay.data_dir) / "tls", config.relay.hostname
        )
        cert, key = str(cert_path), str(key_path)
    return cert, key


def server_context(config: Config) -> ssl.SSLContext:
    """A TLS 1.2+ server context from `[tls]`, or from the generated self-signed pair."""
    cert, key = _pair(config)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def certificate_expiry(config: Config) -> float:
    """When the listeners' certificate (the first of the chain) expires, as Unix time."""
    cert, _ = _pair(config)
    leaf = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    return leaf.not_valid_after_utc.timestamp()


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Create `cert.pem` and `key.pem` in `directory` unless they exist; return their paths."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
