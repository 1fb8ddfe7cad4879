"""The web app's tables (users, tokens, sessions) and the indexes its queries need, versioned on
their own beside the central system's migrations. Plain SQL for SQLite and PostgreSQL."""

from host.cs.storage import Db

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE web_users (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT, created TEXT NOT NULL)""",
        """CREATE TABLE web_tokens (
            hash TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL)""",
        """CREATE TABLE web_sessions (
            hash TEXT PRIMARY KEY, name TEXT NOT NULL, expires TEXT NOT NULL)""",
        # Active transactions are few among many: the dashboard counts and lists them often.
        "CREATE INDEX web_transactions_active ON transactions (id) WHERE stop_time IS NULL",
    ],
]


def migrate(db: Db) -> None:
    db.migrate(MIGRATIONS, "web_schema_version")
