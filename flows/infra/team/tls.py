"""The team servers' TLS: the user's certificate and key, or a self-signed CA that `team up` creates once in
TEAM_DIR/tls (its key 0600) and a server certificate it signs for the names clients use. Clients verify the server
against `ca.pem` (team.env points MLflow's and Prefect's clients at it)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from flows.infra.team.settings import TeamError, write_file


@dataclass(frozen=True)
class Tls:
    cert: Path  # the servers' certificate (chain)
    key: Path  # its private key (0600)
    ca: Path  # what clients verify the servers with


def _names(advertise: str) -> list[str]:
    return sorted({advertise, "localhost", "127.0.0.1", socket.gethostname()})


def _san(names: list[str]):
    from cryptography import x509

    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _key_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(subject: str, issuer_name, signer, public_key, days: int, ca: bool, names: list[str] | None = None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if names:
        b = b.add_extension(_san(names), critical=False)
    return b.sign(signer, hashes.SHA256())


def _covers(cert_path: Path, ca_path: Path, names: list[str]) -> bool:
    """Whether the server certificate there is still valid for a month, names every one of `names` and was signed
    by the CA there."""
    from cryptography import x509

    if not (cert_path.is_file() and ca_path.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }
    fresh = cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    return cert.issuer == ca.subject and set(names) <= have and fresh


def self_signed(team_dir: Path, advertise: str, say=print) -> Tls:
    """TEAM_DIR/tls: the team's CA (made once, 10 years) and a server certificate for `advertise`, localhost,
    127.0.0.1 and this machine's name (made again when a name is missing or it expires within a month)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    d = team_dir / "tls"
    d.mkdir(exist_ok=True)
    ca_pem, ca_key_pem, cert, key = d / "ca.pem", d / "ca-key.pem", d / "server.pem", d / "server-key.pem"
    if not (ca_pem.is_file() and ca_key_pem.is_file()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert("edgekd team CA", None, ca_key, ca_key.public_key(), 3650, True)
        write_file(ca_key_pem, _key_pem(ca_key), 0o600)
        write_file(ca_pem, ca_cert.public_bytes(_pem()).decode())
        say(f"created the team's certificate authority {ca_pem}")
    names = _names(advertise)
    if not _covers(cert, ca_pem, names):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        ca_key = load_pem_private_key(ca_key_pem.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert(advertise, ca_cert.subject, ca_key, server_key.public_key(), 397, False, names)
        write_file(key, _key_pem(server_key), 0o600)
        write_file(cert, server.public_bytes(_pem()).decode())
        say(f"issued the servers' certificate for {', '.join(names)}")
    return Tls(cert, key, ca_pem)


def _pem():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def users_own(team_dir: Path, cert: str, key: str, ca: str | None) -> Tls:
    """The user's certificate and key (and the CA that signed it, for clients: default the certificate itself),
    checked to be readable PEM and to belong together; the CA is copied to TEAM_DIR/tls/ca.pem for team.env."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    paths = {"--tls-cert": Path(cert), "--tls-key": Path(key), "--tls-ca": Path(ca or cert)}
    for flag, p in paths.items():
        if not p.is_file():
            raise TeamError(f"{flag} {p}: no such file")
    try:
        c = x509.load_pem_x509_certificate(paths["--tls-cert"].read_bytes())
        k = load_pem_private_key(paths["--tls-key"].read_bytes(), None)
        x509.load_pem_x509_certificates(paths["--tls-ca"].read_bytes())
    except (ValueError, TypeError) as e:
        raise TeamError(f"--tls-cert/--tls-key/--tls-ca: not an unencrypted PEM certificate and key ({e})") from None
    if c.public_key().public_numbers() != k.public_key().public_numbers():
        raise TeamError(f"--tls-key {key} is not the key of --tls-cert {cert}")
    (team_dir / "tls").mkdir(exist_ok=True)
    shutil.copyfile(paths["--tls-ca"], team_dir / "tls" / "ca.pem")
    return Tls(paths["--tls-cert"].resolve(), paths["--tls-key"].resolve(), team_dir / "tls" / "ca.pem")
