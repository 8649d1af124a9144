"""Serializers for the request bodies of the hub's OpenAPI document that schemathesis has none for.

Loaded by `tests/e2e/openapi.rs` through SCHEMATHESIS_HOOKS. ZIP, DICOM and PDF uploads are raw
bytes (`format: binary`), sent as they were generated. A STOW-RS body is `multipart/related;
type="application/dicom"`, one part per array item (what the document says about it), with its
boundary in the Content-Type.
"""

import uuid

import schemathesis
from schemathesis.transport import register_serializer

schemathesis.serializer.alias(
    ["application/zip", "application/x-zip-compressed", "application/dicom", "application/pdf"],
    "application/octet-stream",
)


def _as_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8")


def _multipart_related(ctx, value):
    boundary = uuid.uuid4().hex
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if not isinstance(value, list):
        # Not a list of parts (negative data): whatever it is, without any part framing.
        return {"data": _as_bytes(value), "headers": {"Content-Type": content_type}}
    body = b""
    for part in value:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + _as_bytes(part) + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return {"data": body, "headers": {"Content-Type": content_type}}


register_serializer(_multipart_related, "multipart/related")
