"""The store's schema, as numbered steps: a file is at version N once steps 1..N ran on it.

Each step is a function ``mNNN_what(conn)``; ``migrate`` runs the steps a file has not had,
each in its own transaction together with its row in ``migrations`` (so a crash mid-step
leaves the file at the previous version, and two kernels opening one file apply a step once).
Add a step at the end, never edit one that has shipped: files in the wild have run it.

Files written before migrations existed (schema version 1) have no ``migrations`` table; the
first two steps only create what is missing, so on those files they record the version.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from .errors import StoreError

Migration = Callable[[sqlite3.Connection], None]

#: Every step, in order; ``MIGRATIONS[i]`` takes a file from version i to i + 1.
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next step; its name must carry the next number (``m003_...``)."""
    expected = f"m{len(MIGRATIONS) + 1:03d}_"
    if not fn.__name__.startswith(expected):
        raise ValueError(f"migration {fn.__name__} should be named {expected}...")
    MIGRATIONS.append(fn)
    return fn


def latest() -> int:
    """The version this code writes."""
    return len(MIGRATIONS)


def applied(conn: sqlite3.Connection) -> list[int]:
    """Versions recorded in the file, in order (empty for a new or pre-migrations file)."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                 "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
    return _recorded(conn)


def _recorded(conn: sqlite3.Connection) -> list[int]:
    try:
        return [r[0] for r in conn.execute("SELECT version FROM migrations ORDER BY version")]
    except sqlite3.OperationalError:  # no such table: new, or written before migrations
        return []


def migrate(conn: sqlite3.Connection, path: str = "") -> list[int]:
    """Bring the file up to ``latest()``; returns the versions applied now.

    Refuses a file a newer kimi_magic wrote: its tables may mean things this code would
    misread or overwrite.
    """
    ran: list[int] = []
    if _recorded(conn) == list(range(1, latest() + 1)):
        return ran  # the usual open: a read, no write lock
    for version, step in enumerate(MIGRATIONS, start=1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = applied(conn)
            if done and max(done) > latest():
                raise StoreError(
                    f"the store {path} has schema version {max(done)}, newer than this "
                    f"kimi_magic's {latest()}: upgrade kimi_magic or point KIMI_MAGIC_STORE "
                    "at another file")
            if version not in done:
                step(conn)
                conn.execute("INSERT INTO migrations VALUES (?, ?, ?)",
                             (version, step.__name__, time.time()))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(version),))
                ran.append(version)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return ran


@migration
def m001_sessions(conn: sqlite3.Connection) -> None:
    """Messages by hash, history nodes, sessions, turns, snapshots and the recall archive."""
    for sql in (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE IF NOT EXISTS messages (hash TEXT PRIMARY KEY, data TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS nodes (
            id INTEGER PRIMARY KEY, parent INTEGER REFERENCES nodes(id),
            hash TEXT NOT NULL REFERENCES messages(hash), meta TEXT)""",
        """CREATE TABLE IF NOT EXISTS sessions (
            name TEXT PRIMARY KEY, created REAL, updated REAL, model TEXT, head TEXT,
            state TEXT)""",
        """CREATE TABLE IF NOT EXISTS turns (
            id INTEGER PRIMARY KEY, session TEXT, time REAL, kind TEXT, model TEXT,
            prompt_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,
            completion_tokens INTEGER, cost REAL, seconds REAL, exact INTEGER,
            context_tokens INTEGER, cell_id TEXT)""",
        """CREATE TABLE IF NOT EXISTS snapshots (
            id INTEGER PRIMARY KEY, session TEXT, label TEXT, time REAL, turns INTEGER,
            tokens INTEGER, context TEXT, parent INTEGER, auto INTEGER DEFAULT 0)""",
        """CREATE TABLE IF NOT EXISTS archive (
            id INTEGER PRIMARY KEY, session TEXT, time REAL, reason TEXT, text TEXT,
            hashes TEXT)""",
        """CREATE VIRTUAL TABLE IF NOT EXISTS archive_fts USING fts5(
            text, content='archive', content_rowid='id')""",
        """CREATE TRIGGER IF NOT EXISTS archive_ai AFTER INSERT ON archive BEGIN
            INSERT INTO archive_fts(rowid, text) VALUES (new.id, new.text); END""",
        "CREATE INDEX IF NOT EXISTS turns_session ON turns(session)",
        "CREATE INDEX IF NOT EXISTS snapshots_session ON snapshots(session)",
    ):
        conn.execute(sql)


@migration
def m002_batches(conn: sqlite3.Connection) -> None:
    """Submitted Batch API jobs and how to map their lines back to items.

    Version-1 files that ran a batch already have this table (the batch module created it).
    """
    conn.execute(
        """CREATE TABLE IF NOT EXISTS batches (
            id TEXT PRIMARY KEY, session TEXT, created REAL, model TEXT, items INTEGER,
            status TEXT, input_file TEXT, output_file TEXT, error_file TEXT, mapping TEXT,
            out TEXT, source TEXT, collected REAL, cost REAL, failed INTEGER)""")
