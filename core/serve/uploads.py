"""Reading a POST /predict body: the size cap while reading, a deadline, multipart or one raw image.

Nothing here touches the model: a request joins a batch only after its whole
body has arrived and every image in it has decoded, so a slow or stalled
client holds a connection, never a batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

FIELD = "file"  # the multipart field that carries images


class BadInput(Exception):
    """A request the client must fix: answered `status` with {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    name: str
    data: bytes


async def read_body(request, max_mb: float, timeout: float) -> bytes:
    """The whole body, refused (413) as soon as it passes `max_mb` MiB, or (408) when not in by `timeout` s."""
    limit, mb = int(max_mb * 2**20), f"{max_mb:g} MB"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadInput(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise BadInput(413, f"the request body is {int(declared)} bytes; the limit is {mb} (--max-upload-mb)")
    chunks: list[bytes] = []
    size = 0

    async def collect():
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a chunked body says no length up front: counted as it comes
                raise BadInput(413, f"the request body passed {mb} while being read; the limit is {mb} "
                                    "(--max-upload-mb)")
            chunks.append(chunk)

    from starlette.requests import ClientDisconnect

    try:
        await asyncio.wait_for(collect(), timeout)
    except ClientDisconnect:
        raise BadInput(400, f"the client went away after {size} bytes of its body") from None
    except asyncio.TimeoutError:
        raise BadInput(408, f"the request body did not arrive within {timeout:g} s ({size} bytes came); "
                            "send it at once") from None
    return b"".join(chunks)


def uploads_of(body: bytes, content_type: str, max_files: int) -> list[Upload]:
    """The images of a request: the `file` parts of a multipart form, or the body itself for image/*."""
    kind = content_type.split(";")[0].strip().lower()
    if not body:
        raise BadInput(400, "the request body is empty: send images as multipart/form-data in the field "
                            f"'{FIELD}', or one image as the body with Content-Type image/*")
    if kind.startswith("image/"):
        return [Upload("body", body)]
    if kind == "multipart/form-data":
        uploads = parse_multipart(body, content_type, max_files)
        if not uploads:
            raise BadInput(400, f"the form holds no files in the field '{FIELD}'")
        return uploads
    raise BadInput(415, f"Content-Type {kind or '(none)'!r} is not accepted: send multipart/form-data with "
                        f"images in the field '{FIELD}', or one image with Content-Type image/*")


def parse_multipart(body: bytes, content_type: str, max_files: int) -> list[Upload]:
    """Files of a multipart/form-data body, in order; any part other than a file in `file` is refused."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadInput(400, "the multipart Content-Type has no boundary")
    parts: list[dict] = []
    header = [b"", b""]
    ended: list[bool] = []

    def begin():
        if len(parts) == max_files:
            raise BadInput(413, f"more than {max_files} files in one request (--max-files); send them in "
                                "several requests")
        parts.append({"headers": {}, "data": bytearray()})

    def header_end():
        parts[-1]["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, end: parts[-1]["data"].extend(data[start:end]),
        "on_end": lambda: ended.append(True),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise BadInput(400, f"malformed multipart body ({exc})") from None
    if not ended:
        raise BadInput(400, "the multipart body ends before its closing boundary (cut short?)")
    uploads = []
    for index, part in enumerate(parts, 1):
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        if field != FIELD or b"filename" not in options:
            what = f"field {field!r}" if field else f"part {index} (no field name)"
            raise BadInput(400, f"unexpected form {what}: send each image as a file in the field '{FIELD}'")
        name = options[b"filename"].decode("utf-8", "replace") or f"file {index}"
        uploads.append(Upload(name, bytes(part["data"])))
    return uploads
