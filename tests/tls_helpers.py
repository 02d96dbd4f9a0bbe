"""Certificates for the TLS tests, made fresh in a temporary directory (the `cryptography`
package, a test dependency): a CA, the broker's certificate signed by it for 127.0.0.1 and
localhost, a client certificate signed by it, and a second CA that signed nothing of ours
(the wrong one to trust)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path

    def broker_config(self, require_client_certificate: bool = False) -> list[str]:
        """Mosquitto lines making the listener before them a TLS one."""
        lines = [f"cafile {self.ca}", f"certfile {self.server_cert}",
                 f"keyfile {self.server_key}"]
        if require_client_certificate:
            lines.append("require_certificate true")
        return lines


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
                ) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1)))

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(cn, name(cn), key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
             server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = builder(cn, ca_cert.subject, key).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    def write(stem: str, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate
              ) -> tuple[Path, Path | None]:
        crt = directory / f"{stem}.crt"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is None:
            return crt, None
        pem = directory / f"{stem}.key"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        pem.chmod(0o644)  # the broker may run as another user
        return crt, pem

    ca_key, ca_cert = ca("groundstation test CA")
    server_key, server_cert = leaf("broker", ca_key, ca_cert, server=True)
    client_key, client_cert = leaf("flight", ca_key, ca_cert, server=False)
    _, wrong_cert = ca("somebody else's CA")
    ca_path, _ = write("ca", None, ca_cert)
    s_crt, s_key = write("server", server_key, server_cert)
    c_crt, c_key = write("client", client_key, client_cert)
    wrong_path, _ = write("wrong-ca", None, wrong_cert)
    assert s_key is not None and c_key is not None
    return Certificates(ca_path, s_crt, s_key, c_crt, c_key, wrong_path)
