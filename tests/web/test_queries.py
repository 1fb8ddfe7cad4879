"""The dashboard's queries on their own (host/web/queries.py)."""

import json

from host.cs import storage
from host.web import queries

T0 = "2026-11-27T10:00:00.000Z"


def test_meter_value_pages_are_in_a_total_order(tmp_path):
    # Two MeterValues of one time (a clock-aligned and a periodic sample, say): ordered by
    # time alone, their order was undefined, so each page's query could break the tie its
    # own way, and offset pages show one twice and the other never
    db = storage.Db(storage.database_url(str(tmp_path), None))
    rows = storage.meter_value_rows(
        "CP1", 1, 7, [{"timestamp": T0, "sampledValue": [{"value": v}]} for v in "21"]
    )
    db.executemany(storage.METER_VALUE_SQL, rows)
    db.commit()
    first, second = (queries.list_meter_values(db, 7, 1, offset) for offset in (0, 1))
    db.close()
    value_of_digest = {row[4]: json.loads(row[5])[0]["value"] for row in rows}
    assert first["next_offset"] == 1 and second["next_offset"] is None
    pages = [page["items"][0]["sampled"][0]["value"] for page in (first, second)]
    assert pages == [value_of_digest[digest] for digest in sorted(value_of_digest)]


def test_the_chart_plots_readings_only(tmp_path):
    """A SignedData value of digits only, and a value "NaN" or "Infinity", were plotted."""
    db = storage.Db(storage.database_url(str(tmp_path), None))
    start = {"connectorId": 1, "idTag": "T", "meterStart": 1000, "timestamp": T0}
    tx = storage.start_transaction(db, "CP1", start)["transactionId"]
    energy = {"measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    samples = [
        (T0.replace("10:00", "10:01"), {"value": "1500", **energy}),
        (T0.replace("10:00", "10:02"), {"value": "31415926", "format": "SignedData", **energy}),
        (T0.replace("10:00", "10:03"), {"value": "NaN", **energy}),
        (T0.replace("10:00", "10:04"), {"value": "Infinity", **energy}),
        (T0.replace("10:00", "10:05"), {"value": "2500", **energy}),
    ]
    values = [{"timestamp": time, "sampledValue": [sample]} for time, sample in samples]
    db.executemany(storage.METER_VALUE_SQL, storage.meter_value_rows("CP1", 1, tx, values))
    db.commit()
    points = queries.get_transaction(db, tx)["series"]
    db.close()
    assert [(p["timestamp"][14:16], p["energy_wh"]) for p in points] == [("01", 500), ("05", 1500)]
