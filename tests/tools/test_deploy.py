import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host.cli import main
from host.tools import build, deploy, station

from .conftest import AUTH_KEY, WIFI_PASSWORD


def board_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_deploy_copies_only_what_changed(repl_board, sim_station, unix_bundle, capsys):
    bundle = unix_bundle
    deploy = ["deploy", "--port", repl_board.port, "--station", str(sim_station)]
    deploy += ["--bundle", str(bundle), "--root", str(repl_board.root), "--no-restart"]

    assert main(deploy) == 0
    landed = board_files(repl_board.root)
    manifest = json.loads((bundle / "bundle.json").read_text())
    for name in manifest["files"]:
        assert landed[name] == (bundle / "fs" / name).read_bytes()
    station = json.loads(landed["station.json"])
    assert station["id"] == "CP042" and station["auth_key"] == AUTH_KEY
    assert json.loads(landed["board.json"])["board"] == "sim"
    assert not [name for name in landed if name.endswith(".new")]
    first = capsys.readouterr().out
    assert AUTH_KEY not in first
    assert f"{len(manifest['files']) + 2} of {len(manifest['files']) + 2} files copied" in first

    assert main(deploy) == 0
    assert "0 of" in capsys.readouterr().out
    assert board_files(repl_board.root) == landed

    sim_station.write_text(
        sim_station.read_text().replace("max_current_a = 16", "max_current_a = 20")
    )
    assert main(deploy) == 0
    out = capsys.readouterr().out
    assert "copied board.json" in out and "1 of" in out
    assert json.loads((repl_board.root / "board.json").read_text())["max_current_a"] == 20


def test_deploy_replaces_a_changed_module_and_removes_a_dropped_one(
    repl_board, sim_station, unix_bundle, capsys
):
    bundle = unix_bundle
    deploy = ["deploy", "--port", repl_board.port, "--station", str(sim_station)]
    deploy += ["--bundle", str(bundle), "--root", str(repl_board.root), "--no-restart"]
    assert main(deploy) == 0
    capsys.readouterr()

    manifest = json.loads((bundle / "bundle.json").read_text())
    changed, dropped = "protocol/pilot.mpy", "console.mpy"
    (bundle / "fs" / changed).write_bytes(b"M\x06changed")
    manifest["files"][changed] = build.sha256(bundle / "fs" / changed)
    del manifest["files"][dropped]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    (repl_board.root / "journal.bin").write_bytes(b"station state")  # not deploy's

    assert main(deploy) == 0
    out = capsys.readouterr().out
    assert f"copied {changed}" in out and f"removed {dropped}" in out and "1 of" in out
    assert (repl_board.root / changed).read_bytes() == b"M\x06changed"
    assert not (repl_board.root / dropped).exists()
    assert (repl_board.root / "journal.bin").read_bytes() == b"station state"
    on_board = json.loads((repl_board.root / "deployed.json").read_text())["files"]
    assert dropped not in on_board and on_board[changed] == manifest["files"][changed]


def test_deploy_names_a_missing_port(sim_station, unix_bundle, tmp_path, capsys):
    argv = ["deploy", "--port", str(tmp_path / "ttyACM3"), "--station", str(sim_station)]
    assert main(argv + ["--bundle", str(unix_bundle)]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_deploy_refuses_a_bundle_for_another_chip(sim_station, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    build.build("esp32c3", bundle)
    argv = ["deploy", "--port", "/dev/null", "--station", str(sim_station)]
    assert main(argv + ["--bundle", str(bundle)]) == 2
    assert "built for esp32c3" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda b: (b / "fs" / "app.mpy").unlink(), "fs/app.mpy is missing or not as"),
        (lambda b: (b / "fs" / "app.mpy").write_bytes(b"M\x06"), "fs/app.mpy is missing or not as"),
        (lambda b: (b / "bundle.json").write_text("[]"), "not a bundle made by `evse build`"),
    ],
    ids=["module missing", "module changed", "manifest of another shape"],
)
def test_deploy_refuses_an_incomplete_bundle_before_touching_the_board(
    sim_station, unix_bundle, damage, error, capsys
):
    damage(unix_bundle)  # as a build cut short leaves it
    argv = ["deploy", "--port", "/dev/null", "--station", str(sim_station)]
    assert main(argv + ["--bundle", str(unix_bundle)]) == 2
    assert error in capsys.readouterr().err


def test_a_damaged_board_manifest_means_copy_everything(repl_board, sim_station, unix_bundle):
    (repl_board.root / "deployed.json").write_text('{"files": ')
    deploy = ["deploy", "--port", repl_board.port, "--station", str(sim_station)]
    deploy += ["--bundle", str(unix_bundle), "--root", str(repl_board.root), "--no-restart"]
    assert main(deploy) == 0
    on_board = json.loads((repl_board.root / "deployed.json").read_text())["files"]
    assert "main.py" in on_board and "station.json" in on_board


def test_deploy_lands_certificates_as_der_and_logs_no_secret(
    repl_board, esp32_station, tmp_path, capsys
):
    bundle = tmp_path / "esp32"
    build.build("esp32", bundle)
    deploy = ["deploy", "--port", repl_board.port, "--station", str(esp32_station)]
    deploy += ["--bundle", str(bundle), "--root", str(repl_board.root), "--no-restart"]
    assert main(deploy) == 0
    out, err = capsys.readouterr()
    for secret in (AUTH_KEY, WIFI_PASSWORD):
        assert secret not in out + err
    ca_der = (repl_board.root / "ca.der").read_bytes()
    assert ca_der == x509.load_pem_x509_certificate(
        (tmp_path / "ca.pem").read_bytes()
    ).public_bytes(serialization.Encoding.DER)
    config = json.loads((repl_board.root / "station.json").read_text())
    assert config["ca"] == "ca.der" and config["security_profile"] == 2
    assert json.loads((repl_board.root / "board.json").read_text())["board"] == "esp32"


def test_deploy_romfs_puts_only_main_and_the_device_files_on_the_filesystem(
    sim_station, unix_bundle
):
    config = station.load(sim_station)
    files = deploy.wanted_files(config, unix_bundle, romfs=True)
    assert set(files) == {"main.py", "station.json", "board.json"}
    assert set(deploy.wanted_files(config, unix_bundle)) > set(files)


def test_deploy_romfs_refuses_a_board_without_a_romfs_partition(
    repl_board, sim_station, unix_bundle, capsys
):
    argv = ["deploy", "--port", repl_board.port, "--station", str(sim_station), "--romfs"]
    argv += ["--bundle", str(unix_bundle), "--root", str(repl_board.root), "--no-restart"]
    assert main(argv) == 2
    assert "no ROMFS partition" in capsys.readouterr().err
    assert board_files(repl_board.root) == {}  # checked before anything changed
