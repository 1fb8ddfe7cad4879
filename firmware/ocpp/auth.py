# Authorization cache: idTagInfo remembered from the central system's answers, kept on flash
# (<data_dir>/auth_cache.json) and bounded to SIZE entries; the least recently updated goes first.
from ocpp import isotime
from ocpp.config import load_json, save_json

SIZE = 64


class Cache:
    def __init__(self, data_dir):
        self.path = data_dir.rstrip("/") + "/auth_cache.json"
        # id_tag -> [status, expiry (Unix s, 0 = none), update counter]
        self.entries = load_json(self.path, {})
        if type(self.entries) is not dict:
            self.entries = {}
        self.counter = max([e[2] for e in self.entries.values()] or [0])

    def update(self, id_tag, info):
        """Remember idTagInfo `info` for `id_tag` (from Authorize, Start- or StopTransaction)."""
        expiry = 0
        if "expiryDate" in info:
            try:
                expiry = isotime.parse(info["expiryDate"])
            except ValueError:
                pass
        old = self.entries.get(id_tag)
        if old and old[0] == info["status"] and old[1] == expiry:
            return
        if id_tag not in self.entries and len(self.entries) >= SIZE:
            oldest = min(self.entries, key=lambda tag: self.entries[tag][2])
            del self.entries[oldest]
        self.counter += 1
        self.entries[id_tag] = [info["status"], expiry, self.counter]
        save_json(self.path, self.entries)

    def accepted(self, id_tag, now):
        """True when the cache holds a valid Accepted entry for `id_tag`."""
        entry = self.entries.get(id_tag)
        return bool(entry) and entry[0] == "Accepted" and (entry[1] == 0 or entry[1] > now)

    def clear(self):
        self.entries = {}
        save_json(self.path, self.entries)
