"""The one registry of sessions per kernel: which exist, which is current, shared settings."""

from __future__ import annotations

from collections.abc import Callable

from ..wire.client import KimiClient
from .branching import check_name
from .session import Session, connect
from .settings import Settings
from .store import Store


class Sessions:
    """Sessions of one kernel, sharing one ``Settings`` and one ``Store``."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._store = store
        self.open: dict[str, Session] = {}
        self.current_name = "default"
        self._client: KimiClient | None = None
        #: Called with each newly opened session (the magic wires pins and widgets here).
        self.on_open: list[Callable[[Session], None]] = []

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    @property
    def has_store(self) -> bool:
        """Whether a store is open (``store`` opens the default one on first use)."""
        return self._store is not None

    def use_store(self, store: Store) -> None:
        self._store = store
        self.open.clear()

    def get(self, name: str | None = None) -> Session:
        """The named session (default: the current one), opened or resumed on first use."""
        name = check_name(name or self.current_name)
        if name not in self.open:
            session = Session(name, self.settings, store=self.store,
                              client_provider=self.client)
            self.open[name] = session
            for hook in self.on_open:
                hook(session)
        return self.open[name]

    @property
    def current(self) -> Session:
        return self.get()

    def use(self, name: str) -> Session:
        session = self.get(name)
        self.current_name = name
        return session

    def fork(self, name: str, snapshot: int | str | None = None) -> Session:
        """Fork the current session (or one of its snapshots) into ``name`` and switch to it."""
        self.current.fork(name, snapshot)
        return self.use(name)

    def client(self) -> KimiClient:
        """One HTTP client (one connection pool) for every session of the kernel."""
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def reconnect(self) -> None:
        """Drop HTTP clients after the key, URL or server settings changed."""
        if self._client is not None:
            self._client.close()
        self._client = None
        for s in self.open.values():
            s.drop_client()

    def close(self) -> None:
        self.reconnect()
        self.open.clear()
        if self._store is not None:
            self._store.close()
            self._store = None
