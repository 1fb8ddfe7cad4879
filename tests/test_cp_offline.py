"""Transactions started offline follow LocalAuthorizeOffline (the authorization cache) and
AllowOfflineTxForUnknownId: the firmware runs with no central system reachable."""

import json
import subprocess

import pytest

from host import mpy
from tests.cp_driver import TESTS


def present(flash, tag: str, config: dict, cache: dict | None = None) -> dict:
    flash.mkdir(exist_ok=True)
    (flash / "station.json").write_text(json.dumps({"id": "OFF", "url": "ws://127.0.0.1:9/x"}))
    (flash / "ocpp_config.json").write_text(json.dumps(config))
    if cache is not None:
        (flash / "auth_cache.json").write_text(json.dumps(cache))
    argv = mpy.command(TESTS / "mp_cp_offline.py", str(flash), tag)
    done = subprocess.run(argv, env=mpy.environ(), capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "tag, config, starts",
    [
        ("KNOWN", {"LocalAuthorizeOffline": True}, True),
        ("KNOWN", {"LocalAuthorizeOffline": False}, False),
        ("KNOWN", {"LocalAuthorizeOffline": True, "AuthorizationCacheEnabled": False}, False),
        ("EXPIRED", {"LocalAuthorizeOffline": True}, False),
        ("BLOCKED", {"LocalAuthorizeOffline": True}, False),
        ("STRANGER", {"AllowOfflineTxForUnknownId": False}, False),
        ("STRANGER", {"AllowOfflineTxForUnknownId": True}, True),
        ("BLOCKED", {"AllowOfflineTxForUnknownId": True}, False),  # known, not unknown
    ],
)
def test_offline_start_rules(tmp_path, tag, config, starts):
    cache = {
        "KNOWN": ["Accepted", 0, 1],
        "EXPIRED": ["Accepted", 1000, 2],  # expired in 1970
        "BLOCKED": ["Blocked", 0, 3],
    }
    result = present(tmp_path / "flash", tag, config, cache)
    assert result["online"] is False
    assert result["tx"] is starts
    assert result["contactor"] is starts
    assert result["pending"] == (1 if starts else 0)  # the StartTransaction waits on flash
