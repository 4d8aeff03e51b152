"""Multipart forms streamed to a private temp folder, with a size limit; the folder (and every
partial file in it) is removed when the request ends, however it ends (refused, failed, or a
client that went away mid-upload)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from aiohttp import BodyPartReader, ClientPayloadError, web

_LOGGER = logging.getLogger(__name__)

MAX_FIELD_CHARS = 64 * 1024  # text fields (transcript, description...)
_BLOCK = 1 << 16


class UploadRefused(Exception):
    """A form the page must be told about: HTTP status, message, the form field at fault."""

    def __init__(self, message: str, field_name: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field_name
        self.status = status


@dataclass
class UploadedForm:
    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)

    def text(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default).strip()

    def file(self, name: str) -> Path | None:
        paths = self.files.get(name)
        return paths[0] if paths else None

    def flag(self, name: str) -> bool:
        return self.fields.get(name, "").lower() in ("1", "true", "on", "yes")


@asynccontextmanager
async def uploaded_form(request: web.Request, temp_root: Path, max_bytes: int) -> AsyncIterator[UploadedForm]:
    """Stream the request's multipart form into a temp folder under `temp_root` (on the data dir's
    file system, so the store can move files into place with a rename)."""
    limit_mb = max_bytes / (1024 * 1024)
    if request.content_length is not None and request.content_length > max_bytes:
        raise UploadRefused(f"the upload is over the size limit of {limit_mb:g} MB", status=413)
    if not request.content_type.startswith("multipart/"):
        raise UploadRefused("expected a multipart form upload")
    temp_root.mkdir(parents=True, exist_ok=True)
    form = UploadedForm(Path(tempfile.mkdtemp(prefix="upload-", dir=temp_root)))
    try:
        reader = await request.multipart()
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.filename is None:
                value = await part.read(decode=True)
                if len(value) > MAX_FIELD_CHARS:
                    raise UploadRefused(f"{part.name} is too long", part.name)
                form.fields[part.name] = value.decode("utf-8", errors="replace")
                continue
            if not part.filename:  # a file input left empty
                await part.release()
                continue
            target = form.folder / f"{len(list(form.folder.iterdir()))}.upload"
            with open(target, "wb") as out:
                while block := await part.read_chunk(_BLOCK):
                    total += len(block)
                    if total > max_bytes:
                        raise UploadRefused(
                            f"the upload is over the size limit of {limit_mb:g} MB", part.name, status=413
                        )
                    out.write(block)
            form.files.setdefault(part.name, []).append(target)
        yield form
    except (ConnectionError, ClientPayloadError, asyncio.CancelledError) as err:
        _LOGGER.info("Upload interrupted (%s); nothing was kept", type(err).__name__)
        raise
    finally:
        shutil.rmtree(form.folder, ignore_errors=True)


def clear_stale_uploads(temp_root: Path) -> None:
    """Left by a process that was killed mid-upload."""
    if temp_root.is_dir():
        for stale in temp_root.glob("upload-*"):
            shutil.rmtree(stale, ignore_errors=True)
