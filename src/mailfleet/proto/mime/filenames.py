"""Attachment file names: the one a part names made safe to show and to save
(last path component only, no hidden characters: ``proto/hidden_chars.py``,
at most 255 characters), or one derived from the content type when the part
names none (``invite.ics``, ``image.png``, ``message.eml``).
"""

from __future__ import annotations

import re

from mailfleet.proto.hidden_chars import HIDDEN
from mailfleet.proto.mime.defects import valid_text


def safe_filename(name: str | None) -> str | None:
    """The last path component, without control, zero-width or
    bidirectional-override characters (used to disguise "exe" as "pdf"), or
    None if nothing is left."""
    if not name:
        return None
    name = re.split(r"[/\\]", HIDDEN.sub("", valid_text(name)))[-1].strip()
    if name in ("", ".", ".."):
        return None
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 254 - len(ext)] + dot + ext if dot and 0 < len(ext) <= 16 else name[:255]
    return name


_EXTENSIONS = {
    "application/gzip": "gz",
    "application/ics": "ics",
    "application/json": "json",
    "application/msword": "doc",
    "application/pdf": "pdf",
    "application/pgp-encrypted": "asc",
    "application/pgp-keys": "asc",
    "application/pgp-signature": "asc",
    "application/pkcs7-mime": "p7m",
    "application/pkcs7-signature": "p7s",
    "application/rtf": "rtf",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/x-pkcs7-signature": "p7s",
    "application/xml": "xml",
    "application/zip": "zip",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "image/bmp": "bmp",
    "image/gif": "gif",
    "image/heic": "heic",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/png": "png",
    "image/svg+xml": "svg",
    "image/tiff": "tif",
    "image/webp": "webp",
    "message/delivery-status": "txt",
    "message/disposition-notification": "txt",
    "message/feedback-report": "txt",
    "message/global": "eml",
    "message/rfc822": "eml",
    "text/calendar": "ics",
    "text/css": "css",
    "text/csv": "csv",
    "text/html": "html",
    "text/rfc822-headers": "txt",
    "text/vcard": "vcf",
    "text/x-vcard": "vcf",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
_STEMS = {
    "text/calendar": "invite",
    "application/ics": "invite",
    "application/pgp-signature": "signature",
    "application/pkcs7-signature": "smime",
    "application/x-pkcs7-signature": "smime",
    "message/rfc822": "message",
    "message/global": "message",
}


def derived_filename(content_type: str, subtype: str) -> str:
    maintype = content_type.partition("/")[0]
    ext = _EXTENSIONS.get(content_type) or ("txt" if maintype == "text" else "bin")
    if content_type in _STEMS:
        stem = _STEMS[content_type]
    elif maintype in ("image", "audio", "video"):
        stem = maintype
    elif maintype == "message":
        stem = subtype or "message"
    else:
        stem = "attachment"
    return f"{stem}.{ext}"
