"""Attachments: PDF files and images, as data URLs, appended after the rendered pages.

The data URLs are read exactly as smtp/SendEmail reads its attachments (``connectors.smtp``), so
a file field's value works in both. PDFs keep their pages as they are (merged with pypdf); each
image gets a page of its own, the size of the document's first page (laid out by WeasyPrint).
A data URL of another type is InvalidParameters; content that does not read as its type is
InvalidAttachment.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spiff.connector.v1 import types_pb2

from connectors._lazy import lazy_import
from connectors.smtp._attachments import parse_attachments
from server import errors, json_values

from ._pdf import Laid, images_to_pdf

if TYPE_CHECKING:
    import pypdf
    from PIL import Image
else:  # imported by the first call with attachments (in its worker thread), not by discovery
    pypdf = lazy_import("pypdf")
    Image = lazy_import("PIL.Image")

__all__ = ["INVALID_ATTACHMENT", "Attachment", "append", "parse"]

INVALID_ATTACHMENT = "InvalidAttachment"
PDF = "application/pdf"
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True)
class Attachment:
    """One file to append: its position in the parameter, name, media type and content."""

    index: int
    name: str
    mime: str
    content: bytes

    @property
    def where(self) -> str:
        return f"attachments[{self.index}] ({self.name})"


def parse(value: types_pb2.JsonValue, bad: list[errors.Violation]) -> list[Attachment]:
    """The attachments parameter: a data URL or a list of them, each a PDF or an image."""
    raw = json_values.load_parameter(value, "attachments", bad)
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        bad.append(errors.Violation("attachments", "must be a list of data URLs"))
        return []
    found = []
    for index, item in enumerate(items):
        parsed = parse_attachments(item, []) if isinstance(item, str) else []
        if not parsed:
            problem = "must be a data URL: data:<media type>;name=<file>;base64,<data>"
            bad.append(errors.Violation(f"attachments[{index}]", problem))
            continue
        ((name, mime, _, content),) = parsed
        if mime != PDF and mime not in IMAGES:
            problem = f"must be a PDF (application/pdf) or a PNG, JPEG, GIF or WebP image, not {mime}"
            bad.append(errors.Violation(f"attachments[{index}]", problem))
        found.append(Attachment(index, name, mime, content))
    return found


def _invalid(attachment: Attachment, problem: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{attachment.where} {problem}.", error_code=INVALID_ATTACHMENT)


def _reader(attachment: Attachment) -> Any:
    try:
        reader = pypdf.PdfReader(io.BytesIO(attachment.content))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _invalid(attachment, "is an encrypted PDF that needs a password")
        len(reader.pages)  # reads the page tree: a broken one fails here, not halfway through the merge
    except errors.CommandError:
        raise
    except Exception as exc:  # pypdf's errors, and anything a malformed file makes it raise
        raise _invalid(
            attachment, f"is not a readable PDF ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return reader


def _check_image(attachment: Attachment) -> None:
    try:
        with Image.open(io.BytesIO(attachment.content)) as image:
            image.verify()
    except Exception as exc:  # Pillow's errors for unknown, truncated or oversized images
        raise _invalid(
            attachment, f"is not a readable image ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def append(document: Laid, attachments: Sequence[Attachment]) -> tuple[bytes, int]:
    """The PDF of ``document`` followed by ``attachments``, and its page count.

    Raises:
        server.errors.InvalidArgument: InvalidAttachment, a file that does not read as its type.
    """
    if not attachments:
        return document.pdf, document.pages
    parts: list[Any] = []  # PdfReaders, in order
    images: list[tuple[str, bytes]] = []  # consecutive images become one laid-out part

    def flush_images() -> None:
        if images:
            laid = images_to_pdf(images, document.width_px, document.height_px)
            parts.append(pypdf.PdfReader(io.BytesIO(laid.pdf)))
            images.clear()

    for attachment in attachments:
        if attachment.mime == PDF:
            flush_images()
            parts.append(_reader(attachment))
        else:
            _check_image(attachment)
            images.append((attachment.mime, attachment.content))
    flush_images()
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(document.pdf)))
    for reader in parts:
        writer.append(reader, import_outline=False)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue(), len(writer.pages)
