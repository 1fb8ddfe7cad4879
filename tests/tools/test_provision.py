import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from host.cli import main
from host.cs import storage
from host.tools import station

from .conftest import ESP32_STATION, WIFI_PASSWORD, make_ca

TEMPLATE = "\n".join(
    line
    for line in ESP32_STATION.format(auth_key="", wifi_password=WIFI_PASSWORD).splitlines()
    if not line.startswith(("id =", "auth_key =", "security_profile =", "ca ="))
)


def template(tmp_path, profile: int):
    path = tmp_path / "template.toml"
    extra = f"security_profile = {profile}\n" + ('ca = "ca.pem"\n' if profile >= 2 else "")
    path.write_text(extra + TEMPLATE)
    return path


def test_provision_writes_station_files_and_registers_the_keys(tmp_path, capsys):
    out, data = tmp_path / "stations", tmp_path / "cs"
    out.mkdir()
    make_ca(out)  # the central system's CA, as the template's relative `ca` asks
    argv = ["provision", "--template", str(template(tmp_path, 2)), "--count", "3"]
    argv += ["--prefix", "DEPOT-", "--first", "9", "--out", str(out), "--data", str(data)]
    assert main(argv) == 0
    ids = ["DEPOT-009", "DEPOT-010", "DEPOT-011"]
    stations = [station.load(out / f"{i}.toml") for i in ids]
    keys = [s.config["auth_key"] for s in stations]
    assert [s.id for s in stations] == ids
    assert len(set(keys)) == 3 and all(len(k) == 40 for k in keys)
    assert all(stat.S_IMODE((out / f"{i}.toml").stat().st_mode) == 0o600 for i in ids)
    assert not any(key in capsys.readouterr().out for key in keys)

    db = storage.Db(storage.database_url(str(data), None))
    try:
        for item in stations:
            row = storage.get_station(db, item.id)
            assert row is not None and row["security_profile"] == 2
            assert storage.key_matches(row, item.config["auth_key"])
            assert not storage.key_matches(row, keys[0] if item.id != ids[0] else keys[1])
    finally:
        db.close()

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(argv) == 2  # never overwrites a station's keys
    assert "already has station files for DEPOT-009" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_provision_issues_client_certificates_for_profile_3(tmp_path):
    out = tmp_path / "stations"
    out.mkdir()
    make_ca(out)
    ca_cert, ca_key = make_ca(tmp_path, "operator")
    argv = ["provision", "--template", str(template(tmp_path, 3)), "--count", "2"]
    argv += ["--out", str(out), "--data", str(tmp_path / "cs")]
    argv += ["--ca-cert", str(ca_cert), "--ca-key", str(ca_key)]
    assert main(argv) == 0
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    for station_id in ("CP001", "CP002"):
        files = station.load(out / f"{station_id}.toml").device_files()
        cert = x509.load_der_x509_certificate(files["cert.der"])
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == station_id
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Test CPO"
        cert.verify_directly_issued_by(issuer)
        assert files["key.der"][:1] == b"\x30"
        assert stat.S_IMODE((out / f"{station_id}.key.pem").stat().st_mode) == 0o600


def test_a_ca_key_of_another_ca_is_refused_before_any_file(tmp_path, capsys):
    out = tmp_path / "stations"
    out.mkdir()
    make_ca(out)
    ca_cert, _ = make_ca(tmp_path, "operator")
    _, other_key = make_ca(tmp_path, "other")
    argv = ["provision", "--template", str(template(tmp_path, 3)), "--count", "2"]
    argv += ["--out", str(out), "--data", str(tmp_path / "cs")]
    argv += ["--ca-cert", str(ca_cert), "--ca-key", str(other_key)]
    assert main(argv) == 2
    assert f"{other_key} is not the key of {ca_cert}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["ca.key.pem", "ca.pem"]


def test_a_bad_template_leaves_no_files(tmp_path, capsys):
    out = tmp_path / "stations"
    bad = template(tmp_path, 2)  # no ca.pem in OUT
    argv = ["provision", "--template", str(bad), "--count", "2", "--out", str(out)]
    argv += ["--data", str(tmp_path / "cs")]
    assert main(argv) == 2
    assert "ca: cannot read" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("count", ["0", "-3"])
def test_provision_needs_a_positive_count(tmp_path, count, capsys):
    argv = ["provision", "--template", str(template(tmp_path, 1)), "--count", count]
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err
