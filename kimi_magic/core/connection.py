"""The session's link to the server: ``Connection`` makes the client when first needed.

A kernel's sessions share one client through a provider (the registry's); a session on its
own makes one from its settings. After the key, URL or server changes, ``drop`` forgets it
and the next call asks again. Without a key, asking for the client is a clear error.
"""

from __future__ import annotations

from collections.abc import Callable

from ..wire.client import KimiClient
from ..wire.errors import KimiError
from . import hints
from .settings import Settings


class Connection:
    """The client of one session: given, from ``provider``, or made from ``settings``."""

    def __init__(self, settings: Settings, client: KimiClient | None = None,
                 provider: Callable[[], KimiClient] | None = None) -> None:
        self.settings = settings
        #: The client in use, if one was made or given.
        self.current = client
        self.provider = provider

    @property
    def client(self) -> KimiClient:
        if self.current is None and self.provider is not None:
            self.current = self.provider()
        if self.current is None:
            self.current = connect(self.settings)
        return self.current

    @property
    def ready(self) -> bool:
        """Whether a call could be made without failing for want of a key."""
        return self.current is not None or bool(self.settings.api_key)

    def drop(self) -> None:
        """Forget the client; the next call asks the provider (or the settings) again."""
        self.current = None


def connect(s: Settings) -> KimiClient:
    """A client for the configured server; a clear error when there is no key."""
    if not s.api_key:
        raise KimiError("no_key", "set MOONSHOT_API_KEY in the environment or "
                        f"{hints.setting('api_key', repr('...'))} (it is never shown or stored)")
    return KimiClient(s.base_url, s.api_key, timeout=s.timeout, max_retries=s.max_retries,
                      retry_base=s.retry_base, server=s.server)
