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
