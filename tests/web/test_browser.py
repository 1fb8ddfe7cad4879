"""The dashboard in real headless Chromium (Debian's, driven by Playwright): log in, watch the
simulated firmware station come online, start a charge, see Charging and the chart grow, stop
it, find it; a phone-sized screen, faults pushed live, and the read-only role."""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from host.demo import BOARD
from host.sim import SimStation, write_station_config
from tests.web.conftest import PASSWORD, LiveCS, lost_transaction, wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed (the Makefile installs it: run `make`)")
    profile = tempfile.mkdtemp(prefix="evse-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True
        )
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab, logged out (tests do not depend on each other's session)."""
    browser.clear_cookies()
    tab = browser.new_page()
    yield tab
    tab.close()


def points(page: Page) -> int:
    chart = page.locator("svg[data-points]")
    return int(chart.get_attribute("data-points") or 0) if chart.count() else 0


@pytest.fixture
def firmware_station(live: LiveCS, tmp_path: Path) -> Iterator[SimStation]:
    """The station firmware under micropython on the simulated board, connected to `live`."""
    (tmp_path / "board.json").write_text(json.dumps(BOARD))
    write_station_config(tmp_path, "SIM-1", f"ws://127.0.0.1:{live.ocpp_port}/ocpp")
    station = SimStation(tmp_path)
    yield station
    station.stop()


def send_form(page: Page, operation: str, fields: dict[str, str]) -> None:
    form = page.locator(f"[data-op={operation}]")
    for name, value in fields.items():
        form.locator(f"[name={name}]").fill(value)
    form.locator("button").click()
    expect(form.locator(".result")).to_contain_text(": answered")


def test_charge_from_the_dashboard(live: LiveCS, page: Page, firmware_station: SimStation) -> None:
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(live.base + "/")
    expect(page.locator("#login")).to_be_visible()
    assert page.locator("#view").inner_html() == ""  # nothing readable before logging in
    page.fill("input[name=name]", "op")
    page.fill("input[name=password]", "wrong password")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).to_have_text("op (operator)")
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))

    page.click("[data-nav=tags]")
    page.fill("#tag-edit [name=id_tag]", "WEBTAG")
    page.click("#tag-edit button")
    expect(page.locator("[data-tag=WEBTAG]")).to_be_visible()
    page.click("[data-nav=stations]")
    expect(page.locator("main h1")).to_have_text("Stations")
    page.evaluate("() => { window.notReloaded = true; }")

    station = firmware_station.start()
    card = page.locator("[data-station='SIM-1']")
    expect(card.locator(".dot")).to_have_class(re.compile(r"\bonline\b"))
    expect(card.locator("[data-connector='1']")).to_have_text("1: Available")
    expect(card).to_contain_text("evse evse-sim")  # from its BootNotification
    assert page.evaluate("() => window.notReloaded") is True  # pushed, not reloaded

    card.locator("a.id").click()
    # Sample power and energy every second, so that the chart grows quickly.
    send_form(page, "change-config", {"key": "MeterValueSampleInterval", "value": "1"})
    sampled = "Energy.Active.Import.Register,Power.Active.Import"
    send_form(page, "change-config", {"key": "MeterValuesSampledData", "value": sampled})
    station.command("power 1 11000")
    station.command("ev 1 B")  # plugged in
    form = page.locator("[data-op=remote-start]")
    form.locator("input[name=idTag]").fill("WEBTAG")
    form.locator("button").click()
    link = form.locator(".result a")
    expect(link).to_have_text(re.compile(r"Transaction \d+"))
    transaction_id = int(link.inner_text().split()[-1])
    station.command("ev 1 C")  # the EV asks for charge
    status = page.locator("[data-connector-row='1'] [data-status]")
    expect(status).to_have_text("Charging")

    link.click()
    expect(page.locator("main h1")).to_have_text(f"Transaction {transaction_id}")
    wait_until(lambda: points(page) >= 2, what="chart drawn")
    first = points(page)
    wait_until(lambda: points(page) >= first + 2, what="chart grows")
    expect(page.locator("#tx-details")).to_contain_text("kW")
    page.click("#stop")
    expect(page.locator("#tx-details")).to_contain_text("finished")
    assert page.evaluate("() => window.notReloaded") is True
    station.command("ev 1 A")

    page.click("[data-nav=transactions]")
    page.fill("#filters input[name=station]", "SIM-1")
    page.click("#filters button[type=submit]")
    row = page.locator(f"[data-transaction='{transaction_id}']")
    expect(row).to_contain_text("WEBTAG")
    expect(row.locator("td.num")).to_have_text(re.compile(r"^\d+\.\d\d$"))

    page.click("[data-nav=stations]")
    expect(card.locator(".dot")).to_have_class(re.compile(r"\bonline\b"))
    station.stop()
    expect(card.locator(".dot")).not_to_have_class(re.compile(r"\bonline\b"))
    expect(card).to_have_class(re.compile(r"\boffline\b"))

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()


def test_editing_a_tag_keeps_its_expiry_in_the_browser_s_time_zone(
    live: LiveCS, page: Page
) -> None:
    # Nepal, UTC+05:45: the form showed the expiry's UTC time as a local one, and each save
    # moved it 5 h 45 min earlier
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kathmandu"})
    expiry = "2030-06-01T12:00:00.000Z"
    live.request("PUT", "/api/id-tags/ZONETAG", {"expiry": expiry})
    page.goto(live.base + "/#/tags")
    page.fill("input[name=name]", "op")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    row = page.locator("[data-tag=ZONETAG]")
    row.locator("[data-edit]").click()
    expect(page.locator("#tag-edit [name=expiry]")).to_have_value("2030-06-01T17:45")
    page.check("#tag-edit [name=blocked]")  # what the operator came to change
    page.click("#tag-edit button")
    expect(row.locator("td").nth(3)).to_have_text("yes")
    assert live.request("GET", "/api/id-tags/ZONETAG").json()["expiry"] == expiry


def test_closing_a_transaction_its_station_will_never_stop(live: LiveCS, page: Page) -> None:
    tx_id = lost_transaction(live, "WEB-GONE")
    page.goto(live.base + f"/#/transaction/{tx_id}")
    page.fill("input[name=name]", "op")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#close")
    expect(page.locator("#tx-details")).to_contain_text("ClosedByOperator")
    expect(page.locator("#tx-details")).to_contain_text("finished")
    assert "without its station" in asked[0]
    expect(page.locator("#close")).to_have_count(0)


def test_phone_width_and_read_only_role(live: LiveCS, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live.base + "/")
    page.fill("input[name=name]", "viewer")
    page.fill("input[name=password]", live.tokens["read-only"])  # a token works as well
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).to_have_text("viewer (read-only)")
    with live.station("WEB-2") as station:
        card = page.locator("[data-station='WEB-2']")
        expect(card.locator(".dot")).to_have_class(re.compile(r"\bonline\b"))
        live.run(station.status(2, "Faulted", "GroundFailure"))
        expect(card.locator("[data-connector='2']")).to_contain_text("Faulted GroundFailure")
        expect(page.locator(".problems")).to_contain_text("WEB-2")
        views = {
            "#/stations": "Stations",
            "#/station/WEB-2": "WEB-2",
            "#/transactions": "Transactions",
            "#/log": "Message log",
            "#/tags": "Id tags",
        }
        for view, title in views.items():
            page.goto(live.base + "/" + view)
            expect(page.locator("main h1")).to_contain_text(title)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{view} is {width} px wide on a 390 px screen"
        page.goto(live.base + "/#/station/WEB-2")
        expect(page.locator("#st-ops")).to_contain_text("Read-only role")
        assert page.locator("form[data-op]").count() == 0
