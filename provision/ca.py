"""A private certificate authority for one cluster, and the managers' certificates.

`provision up` keeps the deployment's CA key in an SSM SecureString and never writes it to a
client; `./run_local.sh` with TLS=1 keeps a local one in the cluster directory
(`python -m provision.ca local DIR`). Managers serve their public API over TLS with a
certificate for their addresses, signed by the CA; clients verify it with the CA certificate
(`--cacert`).

EC P-256 keys; the CA is valid for 10 years, a manager's certificate for one year, and
`up` issues a new one once less than 30 days are left (or its addresses changed).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provision.parameter import write_private

CA_DAYS = 3650
CERT_DAYS = 365
RENEW_DAYS = 30


@dataclass(frozen=True)
class Pem:
    cert: str
    key: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def new_ca(name: str) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"work queue {name} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue(ca: Pem, name: str, addresses: list[str]) -> Pem:
    """A server certificate for `addresses` (IP addresses or DNS names), signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(addresses)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def _names(addresses: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for a in addresses:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            out.append(x509.DNSName(a))
    return out


def needs_new(cert_pem: str, ca_cert_pem: str, addresses: list[str]) -> str | None:
    """Why a manager's certificate must be issued again, or None: another CA signed it, its
    addresses differ, or less than RENEW_DAYS are left."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "signed by another CA"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if set(map(str, names)) != set(map(str, _names(addresses))):
        return "its addresses changed"
    if cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS):
        return f"it expires within {RENEW_DAYS} days"
    return None


def local(directory: Path, addresses: list[str]) -> None:
    """A CA and one certificate for this machine's nodes in `directory`, made once: ca.pem
    (give it to clients), ca.key, node.pem, node.key (the keys readable by their owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists() and (directory / "ca.key").exists():
        ca = Pem((directory / "ca.pem").read_text(), (directory / "ca.key").read_text())
    else:
        ca = new_ca(f"local {directory.resolve().name}")
        write_private(str(directory / "ca.key"), ca.key)
        (directory / "ca.pem").write_text(ca.cert)
    node = directory / "node.pem"
    if node.exists() and needs_new(node.read_text(), ca.cert, addresses) is None:
        return
    issued = issue(ca, "work queue node", addresses)
    write_private(str(directory / "node.key"), issued.key)
    node.write_text(issued.cert)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m provision.ca",
        description="Make a local certificate authority and a certificate for this machine's "
        "nodes (run_local.sh does this with TLS=1).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("local", help="make DIR/ca.pem, ca.key, node.pem, node.key (once)")
    lp.add_argument("directory", type=Path)
    lp.add_argument(
        "--address",
        action="append",
        default=None,
        help="an IP address or DNS name the nodes answer at; repeat it "
        "[default: 127.0.0.1, ::1 and localhost]",
    )
    args = p.parse_args(argv)
    local(args.directory, args.address or ["127.0.0.1", "::1", "localhost"])
    print(f"CA certificate: {args.directory / 'ca.pem'}", file=sys.stderr)


if __name__ == "__main__":
    main()
