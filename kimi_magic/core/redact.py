"""Secrets never leave the kernel: one redactor for errors, displays and tool results.

The configured API key, and the values of environment variables whose names look like
secrets (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``), are replaced wherever text
is shown, stored or sent to the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

HIDDEN = "[hidden]"
#: What replaces the configured API key in errors and displays.
KEY_HIDDEN = "[key hidden]"

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD", re.I)
#: Shorter values are too likely to occur by chance in ordinary text to be replaced.
MIN_SECRET_CHARS = 6


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look like secrets."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= MIN_SECRET_CHARS]


def redact(text: str, secrets: Iterable[str | None], *, mark: str = HIDDEN) -> str:
    """``text`` with every secret replaced by ``mark``; longest first, so no secret that
    contains another is left half shown.

    >>> redact("key sk-abc123456 used", ["sk-abc123456"])
    'key [hidden] used'
    """
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS},
                         key=len, reverse=True):
        text = text.replace(secret, mark)
    return text
