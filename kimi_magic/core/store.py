"""Persistence: one SQLite file holds every session, turn, snapshot and archived round.

Messages are stored once, by content hash; history is a chain of nodes with parent links
(so a snapshot row is a pointer, and forks after a rollback share their common past).
Every completed turn is one transaction, so a crash leaves the store at the last completed
turn. WAL mode and a busy timeout let two kernels share a file. Archived rounds are indexed
with FTS5 for recall; submitted Batch API jobs are kept (``store.jobs``) for
``%kimi batches collect``.
Every table is created and changed by the numbered steps in ``migrations``, run on open.
The API key is never written here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import migrations
from .context import Context, Message, Pin
from .errors import StoreError

#: Columns of ``batches`` that collecting and polling may change.
_BATCH_UPDATES = ("status", "output_file", "error_file", "collected", "cost", "failed",
                  "input_file")


def default_path() -> Path:
    """``$KIMI_MAGIC_STORE`` or ``kimi_magic/store.sqlite`` in the user's data directory."""
    env = os.environ.get("KIMI_MAGIC_STORE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("kimi_magic", appauthor=False)) / "store.sqlite"


class Store:
    """The SQLite file behind all sessions of a kernel (``":memory:"`` for a throw-away one)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = str(path) if path is not None else str(default_path())
        self._lock = threading.RLock()
        self.moved_aside: str | None = None
        #: Node id -> (parent id, message): what ``chain`` has read, shared by every chain.
        self._nodes: dict[int, tuple[int | None, Message]] = {}
        self._messages: dict[str, Message] = {}
        self.conn = self._open()
        self.jobs = BatchJobs(self)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if self.path == ":memory:" or not Path(self.path).exists():
                raise StoreError(f"cannot open the store {self.path}: {exc}") from None
            # Never overwrite a file we cannot read: move it aside and start afresh.
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                if Path(self.path + suffix).exists():
                    os.replace(self.path + suffix, aside + suffix)
            self.moved_aside = aside
            warnings.warn(f"kimi_magic: the store {self.path} was unreadable ({exc}); "
                          f"moved it to {aside} and started a new one", stacklevel=3)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False,
                               isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrations.migrate(conn, self.path)
            conn.execute("SELECT count(*) FROM sessions").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes of one operation commit together or not at all."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    # -- messages and chains ------------------------------------------------------------
    def _put(self, conn: sqlite3.Connection, message: Message) -> str:
        # Keep the keys in their wire order (the hash is order-free): a resumed session must
        # send the very bytes it sent before, or the prompt cache misses.
        conn.execute("INSERT OR IGNORE INTO messages VALUES (?, ?)", _message_row(message))
        return message.hash

    def append(self, conn: sqlite3.Connection, parent: int | None,
               messages: tuple[Message, ...] | list[Message]) -> int | None:
        """Add messages as a chain under ``parent``; returns the last node id."""
        node = parent
        for m in messages:
            self._put(conn, m)
            cur = conn.execute("INSERT INTO nodes(parent, hash, meta) VALUES (?, ?, ?)",
                               (node, m.hash, json.dumps(m.meta) if m.meta else None))
            node = cur.lastrowid
        return node

    def chain(self, node: int | None) -> tuple[Message, ...]:
        """The history ending at ``node``, oldest first.

        Nodes are immutable, so each is read once per store: chains that share a past (the
        head and its snapshots, forks after a rollback) share its ``Message`` objects, and
        a chain whose start is already loaded costs no query at all.
        """
        out: list[Message] = []
        with self._lock:
            while node is not None and node in self._nodes:
                node, m = self._nodes[node]
                out.append(m)
            if node is not None:
                # Rows of a transaction in progress may still roll back: never remember them.
                remember = not self.conn.in_transaction
                for id_, parent, data, meta in self.conn.execute(
                        """WITH RECURSIVE c(id, parent, hash, meta, depth) AS (
                               SELECT id, parent, hash, meta, 0 FROM nodes WHERE id = ?
                               UNION ALL
                               SELECT n.id, n.parent, n.hash, n.meta, c.depth + 1
                               FROM nodes n JOIN c ON n.id = c.parent)
                           SELECT c.id, c.parent, m.data, c.meta
                           FROM c JOIN messages m ON m.hash = c.hash
                           ORDER BY c.depth""", (node,)):
                    known = self._nodes.get(id_)
                    if known is None:
                        known = (parent, Message(json.loads(data),
                                                 json.loads(meta) if meta else None))
                        if remember:
                            self._nodes[id_] = known
                    out.append(known[1])
        out.reverse()
        return tuple(out)

    def ancestor(self, node: int | None, steps: int) -> int | None:
        """The node ``steps`` messages before ``node`` in its chain (None past the start)."""
        for _ in range(steps):
            if node in self._nodes:
                node = self._nodes[node][0]
                continue
            row = self.conn.execute("SELECT parent FROM nodes WHERE id = ?",
                                    (node,)).fetchone()
            node = row[0] if row else None
        return node

    def message(self, digest: str | None) -> Message | None:
        """The stored message with this hash (one object per hash and store)."""
        if digest is None:
            return None
        with self._lock:
            if digest in self._messages:
                return self._messages[digest]
            row = self.conn.execute("SELECT data FROM messages WHERE hash = ?",
                                    (digest,)).fetchone()
            if row is None:
                return None
            m = Message(json.loads(row[0]))
            if not self.conn.in_transaction:
                self._messages[digest] = m
            return m

    # -- contexts -----------------------------------------------------------------------
    def dump_context(self, conn: sqlite3.Connection, ctx: Context) -> str:
        """Serialise a context as hashes and a node id (the history chain is already stored)."""
        for m in (ctx.system, ctx.summary, *(p.message for p in ctx.pins)):
            if m is not None:
                self._put(conn, m)
        return json.dumps({
            "system": ctx.system.hash if ctx.system else None,
            "summary": ctx.summary.hash if ctx.summary else None,
            "node": ctx.node,
            "pins": [{"name": p.name, "kind": p.kind, "source": p.source,
                      "hash": p.message.hash, "frozen": p.frozen, "updated": p.updated,
                      "max_tokens": p.max_tokens} for p in ctx.pins],
        })

    def context_loader(self, text: str) -> Callable[[], Context]:
        """Loads the context ``text`` describes when called (a snapshot's, on first use)."""
        return lambda: self.load_context(text)

    def load_context(self, text: str) -> Context:
        raw = json.loads(text)
        pins = tuple(Pin(p["name"], p["kind"], p["source"], self.message(p["hash"]),
                         p.get("frozen", False), p.get("updated", 0.0), p.get("max_tokens"))
                     for p in raw.get("pins", ()))
        return Context(self.message(raw.get("system")), pins, self.message(raw.get("summary")),
                       self.chain(raw.get("node")), node=raw.get("node"))

    def ensure_chain(self, conn: sqlite3.Connection, ctx: Context) -> Context:
        """Give a context whose history is not yet stored a node chain of its own."""
        if ctx.history and ctx.node is None:
            return Context(ctx.system, ctx.pins, ctx.summary, ctx.history,
                           node=self.append(conn, None, ctx.history))
        return ctx

    # -- sessions -----------------------------------------------------------------------
    def save_head(self, conn: sqlite3.Connection, name: str, ctx: Context, model: str,
                  state: dict[str, Any]) -> None:
        now = time.time()
        conn.execute(
            """INSERT INTO sessions(name, created, updated, model, head, state)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET updated=excluded.updated, model=excluded.model,
               head=excluded.head, state=excluded.state""",
            (name, now, now, model, self.dump_context(conn, ctx), json.dumps(state)))

    def load_session(self, name: str) -> tuple[Context, str, dict[str, Any]] | None:
        row = self.conn.execute("SELECT head, model, state FROM sessions WHERE name = ?",
                                (name,)).fetchone()
        if row is None:
            return None
        return self.load_context(row[0]), row[1], json.loads(row[2] or "{}")

    def sessions(self) -> list[dict[str, Any]]:
        """Every stored session, newest first, with its counts; ``cost`` is ``None`` when no
        call had a price (an unpriced model), so it never reads as $0."""
        rows = self.conn.execute(
            """SELECT s.name, s.created, s.updated, s.model,
                      (SELECT count(*) FROM turns t WHERE t.session = s.name AND t.kind = 'chat'),
                      (SELECT count(*) FROM turns t WHERE t.session = s.name),
                      (SELECT sum(cost) FROM turns t WHERE t.session = s.name),
                      (SELECT count(*) FROM snapshots p WHERE p.session = s.name)
               FROM sessions s ORDER BY s.updated DESC""").fetchall()
        keys = ("name", "created", "updated", "model", "turns", "calls", "cost", "snapshots")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- turns ----------------------------------------------------------------------------
    def record_turn(self, conn: sqlite3.Connection, session: str, row: dict[str, Any]) -> None:
        conn.execute(
            """INSERT INTO turns(session, time, kind, model, prompt_tokens, cached_tokens,
               cache_write_tokens, completion_tokens, cost, seconds, exact, context_tokens,
               cell_id) VALUES (:session, :time, :kind, :model, :prompt_tokens, :cached_tokens,
               :cache_write_tokens, :completion_tokens, :cost, :seconds, :exact,
               :context_tokens, :cell_id)""", {"session": session, "cell_id": None, **row})

    def turns(self, session: str) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM turns WHERE session = ? ORDER BY id", (session,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- snapshots --------------------------------------------------------------------------
    def add_snapshot(self, conn: sqlite3.Connection, session: str, label: str, ctx: Context,
                     turns: int, tokens: int, parent: int | None, auto: bool) -> int:
        cur = conn.execute(
            """INSERT INTO snapshots(session, label, time, turns, tokens, context, parent, auto)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (session, label, time.time(), turns, tokens, self.dump_context(conn, ctx), parent,
             int(auto)))
        return int(cur.lastrowid)

    def snapshots(self, session: str) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            """SELECT id, label, time, turns, tokens, parent, auto, context FROM snapshots
               WHERE session = ? ORDER BY id""", (session,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- archive ----------------------------------------------------------------------------
    def archive(self, conn: sqlite3.Connection, session: str, reason: str,
                rounds: list[list[Message]]) -> None:
        """Keep rounds that leave the context, searchable, one row per round."""
        now = time.time()
        # Two statements in all, not two per message: a compress archives a thousand rounds.
        conn.executemany("INSERT OR IGNORE INTO messages VALUES (?, ?)",
                         (_message_row(m) for r in rounds for m in r))
        conn.executemany(
            "INSERT INTO archive(session, time, reason, text, hashes) VALUES (?, ?, ?, ?, ?)",
            ((session, now, reason, "\n\n".join(f"{m.role}: {m.text}" for m in r if m.text),
              json.dumps([m.hash for m in r])) for r in rounds))

    def search(self, session: str, query: str, limit: int = 5) -> list[dict[str, Any]]:
        """Best-matching archived rounds (BM25), any word of the query matching."""
        words = [w for w in _words(query)]
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        rows = self.conn.execute(
            """SELECT a.id, a.time, a.reason, a.text, a.hashes, bm25(archive_fts) AS score
               FROM archive_fts JOIN archive a ON a.id = archive_fts.rowid
               WHERE archive_fts MATCH ? AND a.session = ?
               ORDER BY score LIMIT ?""", (match, session, limit)).fetchall()
        return [{"id": r[0], "time": r[1], "reason": r[2], "text": r[3],
                 "messages": [self.message(h) for h in json.loads(r[4])], "score": -r[5]}
                for r in rows]

    def archived(self, session: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, reason, text FROM archive WHERE session = ? "
                                 "ORDER BY id", (session,)).fetchall()
        return [{"id": r[0], "reason": r[1], "text": r[2]} for r in rows]


class BatchJobs:
    """The ``batches`` table: submitted Batch API jobs, kept for ``%kimi batches collect``.

    Reached as ``store.jobs``; writes take the store's transaction like every other table.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, conn: sqlite3.Connection, job: dict[str, Any]) -> None:
        """Remember a submitted batch (``id``, ``session``, ``created``, ``model``, ``items``,
        ``status``, ``input_file``, ``mapping``, ``out``, ``source``)."""
        conn.execute(
            "INSERT INTO batches(id, session, created, model, items, status, input_file, "
            "mapping, out, source) VALUES (:id, :session, :created, :model, :items, :status, "
            ":input_file, :mapping, :out, :source)",
            {**job, "mapping": json.dumps(job["mapping"], default=str)})

    def all(self, session: str | None = None) -> list[dict[str, Any]]:
        """Batches newest first (all sessions unless one is named), ``mapping`` parsed."""
        sql = ("SELECT id, session, created, model, items, status, mapping, out, source, "
               "collected, cost, failed, input_file FROM batches")
        params: tuple[Any, ...] = ()
        if session is not None:
            sql += " WHERE session = ?"
            params = (session,)
        cur = self.store.conn.execute(sql + " ORDER BY created DESC", params)
        cols = [c[0] for c in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            r["mapping"] = json.loads(r["mapping"] or "{}")
        return rows

    def update(self, conn: sqlite3.Connection, batch_id: str, **values: Any) -> None:
        """Set some of ``status``, ``output_file``, ``error_file``, ``collected``, ``cost``,
        ``failed``, ``input_file`` (cleared once the upload is deleted) on one batch."""
        unknown = set(values) - set(_BATCH_UPDATES)
        if unknown:
            raise ValueError(f"not a batch column to update: {', '.join(sorted(unknown))}")
        cols = ", ".join(f"{k} = ?" for k in values)
        conn.execute(f"UPDATE batches SET {cols} WHERE id = ?", (*values.values(), batch_id))


def _words(query: str) -> list[str]:
    import re

    return [w for w in re.findall(r"[\w.\-/]+", query.lower()) if len(w) > 1][:32]


def _message_row(message: Message) -> tuple[str, str]:
    """A ``messages`` row: the content address and the wire dict in its own key order."""
    return message.hash, json.dumps(message.data, ensure_ascii=False)
