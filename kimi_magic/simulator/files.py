"""The Files API: uploads kept in memory, text extraction for ``file-extract``.

Extraction is deliberately simple: PDFs yield the strings shown by ``Tj``/``TJ`` operators
in their content streams (Flate-compressed streams are inflated first), anything else is
decoded as UTF-8 with errors replaced. That is enough for tests and the offline demo.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import invalid, not_found

MAX_FILE_BYTES = 100 * 1024 * 1024
PURPOSES = ("file-extract", "image", "video", "batch")


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "ok", "status_details": ""}


# --- multipart ----------------------------------------------------------------------------

@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _header_params(value: str) -> dict[str, str]:
    params = {}
    for item in value.split(";")[1:]:
        key, _, raw = item.strip().partition("=")
        params[key.lower()] = raw.strip().strip('"')
    return params


def parse_multipart(body: bytes, content_type: str) -> dict[str, FormPart]:
    """Parse a ``multipart/form-data`` body into its parts, by field name."""
    boundary = _header_params(content_type).get("boundary")
    if not content_type.startswith("multipart/form-data") or not boundary:
        raise invalid("expected a multipart/form-data body")
    delimiter = b"--" + boundary.encode()
    parts: dict[str, FormPart] = {}
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        head, _, data = raw.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key:
                headers[key.strip().lower()] = value.strip()
        disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        parts[name] = FormPart(name, disposition.get("filename"), headers.get("content-type"),
                               data)
    return parts


# --- extraction ---------------------------------------------------------------------------

_STREAM = re.compile(rb"<<(.*?)>>\s*stream\r?\n(.*?)\r?\nendstream", re.S)
# Alternatives never overlap (a backslash only starts an escape), so no backtracking blow-up.
_TEXT_OPS = re.compile(
    rb"\((?:\\.|[^\\)])*\)\s*(?:Tj|')|\[(?:\\.|[^\]\\])*\]\s*TJ|T\*|Td|TD|ET")
_STRING = re.compile(rb"\(((?:\\.|[^\\)])*)\)")
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f",
            b"(": b"(", b")": b")", b"\\": b"\\"}


def _unescape(raw: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return _ESCAPES.get(code, code)

    return re.sub(rb"\\([0-7]{1,3}|.)", one, raw, flags=re.S)


def extract_pdf_text(data: bytes) -> str:
    """Text shown by the PDF's ``Tj``/``TJ`` operators, a line per text line."""
    lines: list[str] = []
    current: list[bytes] = []
    for match in _STREAM.finditer(data):
        stream = match.group(2)
        if b"FlateDecode" in match.group(1):
            try:
                stream = zlib.decompress(stream)
            except zlib.error:
                continue
        for op in _TEXT_OPS.finditer(stream):
            token = op.group(0)
            if token in (b"T*", b"Td", b"TD", b"ET"):
                if current:
                    lines.append(b"".join(current).decode("latin-1"))
                    current = []
                continue
            current.extend(_unescape(s) for s in _STRING.findall(token))
    if current:
        lines.append(b"".join(current).decode("latin-1"))
    return "\n".join(lines)


def extract_text(filename: str, data: bytes) -> str:
    if data.startswith(b"%PDF") or filename.lower().endswith(".pdf"):
        return extract_pdf_text(data)
    return data.decode("utf-8", "replace")


# --- store --------------------------------------------------------------------------------

class FileStore:
    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def add(self, filename: str, purpose: str, data: bytes, created_at: int) -> StoredFile:
        if len(data) > MAX_FILE_BYTES:
            raise invalid("file size exceeds the 100 MB limit")
        stored = StoredFile(f"file-{os.urandom(10).hex()}", filename, purpose, data, created_at)
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def upload(self, body: bytes, content_type: str, created_at: int) -> StoredFile:
        """Store the ``file`` field of a multipart upload under its ``purpose``."""
        parts = parse_multipart(body, content_type)
        purpose = parts["purpose"].data.decode() if "purpose" in parts else ""
        if purpose not in PURPOSES:
            raise invalid(f"purpose must be one of {', '.join(PURPOSES)}")
        if "file" not in parts:
            raise invalid("the form has no 'file' field")
        part = parts["file"]
        return self.add(part.filename or "upload", purpose, part.data, created_at)

    def get(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise not_found(f"file {file_id} not found")
        return stored

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.object() for f in self._files.values()]

    def delete(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            if self._files.pop(file_id, None) is None:
                raise not_found(f"file {file_id} not found")
        return {"id": file_id, "object": "file", "deleted": True}

    def content(self, file_id: str, extract_as: str = "json") -> tuple[bytes, str]:
        """Body and content type of ``GET /v1/files/{id}/content``.

        Moonshot documents the extracted text as the body; clients in the wild read a JSON
        object with a ``content`` field. ``extract_as`` ("json" | "text") picks the shape.
        """
        stored = self.get(file_id)
        if stored.purpose != "file-extract":
            return stored.data, "application/octet-stream"
        file_type = mimetypes.guess_type(stored.filename)[0] or "text/plain"
        text = extract_text(stored.filename, stored.data)
        if extract_as == "text":
            return text.encode(), "text/plain; charset=utf-8"
        payload = {"content": text, "file_type": file_type, "filename": stored.filename,
                   "title": "", "type": "file"}
        return json.dumps(payload, ensure_ascii=False).encode(), "application/json"


__all__ = ["FileStore", "StoredFile", "extract_text", "parse_multipart"]
