"""`evse provision`: identities, keys and station files for a batch of stations.

From a template station file (everything but the identity and the keys), writes one station
file per new station with its id and a fresh random Basic-auth key, optionally a client
certificate signed by the operator's CA (security profile 3), and registers each station with
its key in the central system's database. Station files hold secrets: they are written
readable by their owner only, and nothing is ever overwritten.
"""

import datetime
import os
import secrets
from pathlib import Path

from host.cli import UserError
from host.tools import station

KEY_BYTES = 20  # OCPP 1.6 security: AuthorizationKey of 16 to 20 bytes, as 40 hex digits
CERT_DAYS = 3650


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="create identities, keys and station files for a batch of stations",
        description="Write OUT/<id>.toml for COUNT stations named PREFIX + number, each from "
        "the template with its own random Basic-auth key (and client certificate with --ca-cert "
        "and --ca-key), and register them with their keys in the central system's database. "
        "Relative paths in the template are taken relative to OUT.",
    )
    parser.add_argument("--template", required=True, type=Path, help="station file, no id/key")
    parser.add_argument("--count", required=True, type=int)
    parser.add_argument("--prefix", default="CP", help="id prefix (default CP)")
    parser.add_argument("--first", type=int, default=1, help="first number (default 1)")
    parser.add_argument("--digits", type=int, default=3, help="zero-padded width (default 3)")
    parser.add_argument("--out", required=True, type=Path, help="directory for station files")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate (PEM) for client certs")
    parser.add_argument("--ca-key", type=Path, help="CA private key (PEM) for client certs")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help="central system data directory (SQLite)")
    where.add_argument("--db", metavar="URL", help="central system database URL")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.count < 1:
        raise UserError("--count must be at least 1")
    if (args.ca_cert is None) != (args.ca_key is None):
        raise UserError("give both --ca-cert and --ca-key to issue client certificates")
    try:
        template = args.template.read_text()
    except OSError as error:
        raise UserError(f"cannot read {args.template}: {error.strerror}") from None
    ids = [f"{args.prefix}{n:0{args.digits}d}" for n in range(args.first, args.first + args.count)]
    args.out.mkdir(parents=True, exist_ok=True)
    existing = [i for i in ids if (args.out / f"{i}.toml").exists()]
    if existing:
        raise UserError(f"{args.out} already has station files for {', '.join(existing)}")
    issuer = load_issuer(args.ca_cert, args.ca_key) if args.ca_cert else None
    stations = [provision(template, args.out, station_id, issuer) for station_id in ids]
    register(stations, args.data, args.db)
    print(f"provisioned {len(stations)} stations in {args.out}: {ids[0]} .. {ids[-1]}")
    return 0


def provision(template: str, out: Path, station_id: str, issuer) -> station.Station:
    """Write and validate the station file of one station; returns it."""
    lines = [f'id = "{station_id}"', f'auth_key = "{secrets.token_hex(KEY_BYTES)}"']
    path = out / f"{station_id}.toml"
    written = [path]
    try:
        if issuer is not None:
            cert, key = issue_certificate(station_id, issuer)
            written += [out / f"{station_id}.key.pem", out / f"{station_id}.cert.pem"]
            write_private(written[1], key)
            write_private(written[2], cert)
            lines += [f'cert = "{written[2].name}"', f'key = "{written[1].name}"']
        # Top-level keys must come before the template's first [table]: ours go first.
        write_private(path, ("\n".join(lines) + "\n" + template).encode())
        return station.load(path)
    except UserError:
        for name in written:
            name.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only; never replaces a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path} exists already: not overwriting it") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def register(stations: list[station.Station], data: str | None, db_url: str | None) -> None:
    """Add the stations with their security profile and key to the central system."""
    from host.cs import storage

    db = storage.Db(storage.database_url(data, db_url))
    try:
        for item in stations:
            storage.add_station(db, item.id)
            storage.set_station(
                db,
                item.id,
                security_profile=item.config.get("security_profile", 0),
                auth_key=item.config["auth_key"],
            )
        db.commit()
    finally:
        db.close()


def load_issuer(cert_path: Path, key_path: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"cannot load the CA from {cert_path} and {key_path}: {error}") from None
    # Certificates signed by another key would not chain to the CA: the central system would
    # refuse every station's TLS handshake.
    if key.public_key() != cert.public_key():
        raise UserError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def issue_certificate(station_id: str, issuer) -> tuple[bytes, bytes]:
    """A P-256 key and a client certificate for `station_id` (CN = the id, O = the CA's O,
    as the OCPP 1.6 security whitepaper asks), signed by the CA. Returns PEM (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, station_id)]
    names += ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
