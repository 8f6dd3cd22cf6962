"""Files and batches: uploads, downloads, Moonshot's file-extract and the Batch API calls.

Each call runs through the client's retry policy and comes back as plain dicts or bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import KimiError
from .reply import dump
from .retry import RetryPolicy


class _Calls:
    """What files and batches need of the client: its SDK, retry policy and error reader."""

    def __init__(self, sdk: Callable[[], Any], retry: RetryPolicy,
                 error: Callable[[BaseException], KimiError]) -> None:
        self._sdk = sdk
        self._retry = retry
        self._error = error


class Files(_Calls):
    """``/v1/files``: ``client.files.upload(...)``, ``.content(id)``, ``.extract(path)``."""

    def upload(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """``POST /v1/files``; the file object (``id``, ``bytes``, ``purpose``...)."""
        sdk = self._sdk()
        return dump(self._retry.run(
            lambda: sdk.files.create(file=(filename, data), purpose=purpose)))

    def content(self, file_id: str) -> bytes:
        """``GET /v1/files/{id}/content`` as bytes (a batch's output or error JSONL)."""
        sdk = self._sdk()
        return self._retry.run(lambda: sdk.files.content(file_id).read())

    def delete(self, file_id: str) -> None:
        """``DELETE /v1/files/{id}``: an account holds at most 1,000 files."""
        sdk = self._sdk()
        self._retry.run(lambda: sdk.files.delete(file_id))

    def extract(self, path: str) -> str:
        """Text of a PDF or Office file through Moonshot's ``file-extract`` purpose.

        Uploads the file (``POST /v1/files``), reads ``GET /v1/files/{id}/content`` and deletes
        the upload, since an account may hold only 1,000 files. Moonshot documents that body
        as the extracted text; clients in the wild read it as JSON with a ``content`` field:
        both are accepted.
        """
        sdk = self._sdk()
        try:
            with open(path, "rb") as f:
                uploaded = sdk.files.create(file=f, purpose="file-extract")
            try:
                raw = sdk.files.content(uploaded.id).text
            finally:
                try:
                    sdk.files.delete(uploaded.id)
                except Exception:  # the text is what matters; a stale upload is harmless
                    pass
        except OSError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        return extracted_text(raw)


def extracted_text(raw: str) -> str:
    """The text of a file-extract body: a JSON object's ``content``, or the body itself."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(data, dict) and isinstance(data.get("content"), str):
        return data["content"]
    return raw


class Batches(_Calls):
    """``/v1/batches`` for chat completions: ``client.batches.create(...)``, ``.get(id)``."""

    def create(self, input_file_id: str, metadata: dict[str, str] | None = None,
               completion_window: str = "24h") -> dict[str, Any]:
        """``POST /v1/batches``; the batch object."""
        kwargs: dict[str, Any] = {"input_file_id": input_file_id,
                                  "endpoint": "/v1/chat/completions",
                                  "completion_window": completion_window}
        if metadata:
            kwargs["metadata"] = metadata
        sdk = self._sdk()
        return dump(self._retry.run(lambda: sdk.batches.create(**kwargs)))

    def get(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/batches/{id}``: status, ``request_counts``, output and error file ids."""
        sdk = self._sdk()
        return dump(self._retry.run(lambda: sdk.batches.retrieve(batch_id)))
