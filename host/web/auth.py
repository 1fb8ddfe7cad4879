"""Operators: users with a role, API tokens and dashboard login sessions.

Tokens and session ids are random secrets stored only as SHA-256 hashes; passwords are salted
scrypt hashes. Everything is a plain function of a `storage.Db`, like the rest of the storage.
"""

import hashlib
import hmac
import secrets
import time
from typing import Any

from host.cs.storage import Db, now_iso, with_bools

SESSION_TTL_S = 12 * 3600
TOKEN_PREFIX = "evse_"


class LoginThrottle:
    """Password guesses: after FREE_FAILURES failed password logins for a user name, one more
    try each PAUSE_S, until one succeeds or FORGET_S pass without a try. Every name alike, so
    that the answer tells no one which names exist; at most NAMES_KEPT of them (the least
    recently failed forgotten first). API tokens (256 random bits) are not throttled: an
    operator whose password is being guessed logs in with one."""

    FREE_FAILURES = 5
    PAUSE_S = 10.0
    FORGET_S = 900.0
    NAMES_KEPT = 10_000

    def __init__(self, clock: Any = time.monotonic):
        self._clock = clock
        self._failed: dict[str, tuple[int, float]] = {}  # name: (failures, last), oldest first

    def wait_s(self, name: str) -> float:
        """How long until `name` may try a password again (0: now)."""
        failures, last = self._failed.get(name, (0, 0.0))
        since = self._clock() - last
        if failures < self.FREE_FAILURES or since >= self.FORGET_S:
            return 0.0
        return max(0.0, self.PAUSE_S - since)

    def failed(self, name: str) -> None:
        failures, last = self._failed.pop(name, (0, 0.0))
        now = self._clock()
        self._failed[name] = (failures + 1 if now - last < self.FORGET_S else 1, now)
        if len(self._failed) > self.NAMES_KEPT:
            del self._failed[next(iter(self._failed))]

    def succeeded(self, name: str) -> None:
        self._failed.pop(name, None)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_hex(16)
    key = hashlib.scrypt(password.encode(), salt=salt.encode(), n=2**14, r=8, p=1).hex()
    return f"scrypt${salt}${key}"


def password_matches(stored: str | None, password: str) -> bool:
    """Whether `password` is the one `stored` hashes. A user without one (unknown, or with a
    token only) costs the same scrypt: else a wrong name took 2 ms and a wrong password of a
    real user 80, which told anyone which user names exist."""
    if not stored or not stored.startswith("scrypt$"):
        stored = "none$-$"  # an empty key, which no candidate matches
    _, salt, key = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=salt.encode(), n=2**14, r=8, p=1).hex()
    return hmac.compare_digest(candidate, key)


def add_user(db: Db, name: str, role: str, password: str | None = None) -> None:
    """Create or update a user. Its tokens stay valid; a new password ends its dashboard
    sessions, since it is given when the old one may be known to someone else."""
    hashed = hash_password(password) if password else None
    if hashed:
        db.execute("DELETE FROM web_sessions WHERE name = ?", (name,))
    db.execute(
        "INSERT INTO web_users (name, role, password, created) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role,"
        " password = COALESCE(excluded.password, web_users.password)",
        (name, role, hashed, now_iso()),
    )


def get_user(db: Db, name: str) -> dict[str, Any] | None:
    return db.one("SELECT name, role, password FROM web_users WHERE name = ?", (name,))


def list_users(db: Db) -> list[dict[str, Any]]:
    rows = db.all(
        "SELECT u.name, u.role, u.created, u.password IS NOT NULL AS has_password,"
        " (SELECT COUNT(*) FROM web_tokens t WHERE t.name = u.name) AS tokens"
        " FROM web_users u ORDER BY u.name"
    )
    return [with_bools(row, "has_password") for row in rows]


def remove_user(db: Db, name: str) -> bool:
    db.execute("DELETE FROM web_tokens WHERE name = ?", (name,))
    db.execute("DELETE FROM web_sessions WHERE name = ?", (name,))
    return db.execute("DELETE FROM web_users WHERE name = ?", (name,)).rowcount > 0


def new_token(db: Db, name: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    db.execute(
        "INSERT INTO web_tokens (hash, name, created) VALUES (?, ?, ?)",
        (_digest(token), name, now_iso()),
    )
    return token


def revoke_tokens(db: Db, name: str) -> int:
    """Delete the user's tokens and end its dashboard sessions, which a token may have
    opened (a login takes one as the password); returns how many tokens were deleted."""
    db.execute("DELETE FROM web_sessions WHERE name = ?", (name,))
    return db.execute("DELETE FROM web_tokens WHERE name = ?", (name,)).rowcount


def user_by_token(db: Db, token: str) -> dict[str, Any] | None:
    return db.one(
        "SELECT u.name, u.role FROM web_tokens t JOIN web_users u ON u.name = t.name"
        " WHERE t.hash = ?",
        (_digest(token),),
    )


def new_session(db: Db, name: str) -> str:
    session = secrets.token_urlsafe(32)
    db.execute("DELETE FROM web_sessions WHERE expires < ?", (now_iso(),))
    db.execute(
        "INSERT INTO web_sessions (hash, name, expires) VALUES (?, ?, ?)",
        (_digest(session), name, now_iso(time.time() + SESSION_TTL_S)),
    )
    return session


def user_by_session(db: Db, session: str) -> dict[str, Any] | None:
    return db.one(
        "SELECT u.name, u.role FROM web_sessions s JOIN web_users u ON u.name = s.name"
        " WHERE s.hash = ? AND s.expires > ?",
        (_digest(session), now_iso()),
    )


def end_session(db: Db, session: str) -> None:
    db.execute("DELETE FROM web_sessions WHERE hash = ?", (_digest(session),))
