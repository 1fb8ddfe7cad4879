"""A test certificate authority for TLS tests: a CA and the certificates it signs, on disk as
PEM (for CPython) and DER (for MicroPython, whose TLS takes DER)."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Pki:
    """A test CA and certificates it signs, as PEM files (for CPython) and DER files (for
    MicroPython, whose TLS takes DER)."""

    def __init__(self, directory: Path, name: str):
        self.dir = directory
        self.prefix = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem, self.der = self._write(name, self.cert, self.key)

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    def _write(self, name, cert, key):
        files = {}
        for kind, data in (
            ("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
            ("cert.der", cert.public_bytes(serialization.Encoding.DER)),
            (
                "key.pem",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            ),
            (
                "key.der",
                key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            ),
        ):
            path = self.dir / f"{self.prefix}-{name}-{kind}"
            path.write_bytes(data)
            files[kind] = path
        return (files["cert.pem"], files["key.pem"]), (files["cert.der"], files["key.der"])

    def issue(self, name, dns=(), ips=(), client=False):
        """((cert.pem, key.pem), (cert.der, key.der)) of a leaf certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        names = [x509.DNSName(d) for d in dns] + [
            x509.IPAddress(ipaddress.ip_address(i)) for i in ips
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return self._write(name, builder.sign(self.key, hashes.SHA256()), key)
