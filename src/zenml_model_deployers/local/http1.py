"""HTTP/1.1 request framing for the relay: parse a request head strictly, find its body's end.

The relay forwards bytes, but it must know where each request ends: to move a kept-alive
connection to a new revision only between two requests, to check the API key on every request,
and so that a request can never be read one way by the relay and another way by the server
(request smuggling). So a request whose framing is ambiguous is refused, never forwarded:

- both ``Content-Length`` and ``Transfer-Encoding``, several differing ``Content-Length``
  values, or a ``Content-Length`` that is not a plain decimal number: 400;
- a transfer coding other than exactly ``chunked``: 501;
- whitespace between a header name and its colon, obsolete line folding, a bare CR or LF,
  control characters, a malformed request line: 400; an HTTP version other than 1.0/1.1: 505;
- more than ``MAX_HEADERS`` header fields: 431 (the head's size is bounded by the reader).

Standard library only: the relay imports this module and must start fast.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable

MAX_HEADERS = 100
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
# The same grammar as the line-by-line checks below, as one expression over a whole head: a
# well-formed head (nearly every request) is validated in one pass of the regex engine, and
# only the fields that frame or authenticate it are looked at.
_T = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_WELL_FORMED = re.compile(
    _T + rb" [\x21-\x7e]+ (HTTP/1\.[01])\r\n((?:" + _T + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
_FIELDS = re.compile(
    rb"^(content-length|transfer-encoding|authorization|expect):(.*)\r$", re.I | re.M
)
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class BadRequest(Exception):
    """A request the relay refuses; carries the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        """Creates the refusal.

        Args:
            status: HTTP status code.
            reason: a short explanation sent to the client.
        """
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """What the relay needs from a request head.

    Attributes:
        content_length: body length when framed by Content-Length (0 when there is no body).
        chunked: the body is chunked (Transfer-Encoding: chunked).
        expect_continue: the client waits for ``100 Continue`` before sending the body.
        authorization: the raw Authorization value, if any.
    """

    __slots__ = ("content_length", "chunked", "expect_continue", "authorization")

    def __init__(self) -> None:
        """An empty head: no body, no credentials."""
        self.content_length = 0
        self.chunked = False
        self.expect_continue = False
        self.authorization: bytes | None = None


def parse_head(raw: bytes) -> RequestHead:
    """Parses a request head strictly (see the module docstring for what is refused).

    Args:
        raw: the head, from the request line to the empty line (``\\r\\n\\r\\n``) included.

    Returns:
        The framing and credentials of the request.

    Raises:
        BadRequest: the head is malformed or its framing ambiguous.
    """
    m = _WELL_FORMED.fullmatch(raw)
    if m is None:
        _parse_lines(raw)  # says what is wrong
        raise BadRequest(400, "malformed request head")
    fields = m.group(2)
    if fields.count(b"\n") > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    return _framing(m.group(1), _FIELDS.findall(fields))


def _parse_lines(raw: bytes) -> RequestHead:
    """The line-by-line parse: the slow path, which names what is wrong in a bad head."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _TARGET.match(parts[1]):
        raise BadRequest(400, "malformed request line")
    version = parts[2]
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/") and _TARGET.match(version):
            raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
        raise BadRequest(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    fields = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            # Also refuses obs-fold (a line starting with whitespace) and "Name :".
            raise BadRequest(400, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise BadRequest(400, "control character in a header field")
        fields.append((name, value))
    return _framing(version, fields)


def _framing(version: bytes, fields: Iterable[tuple[bytes, bytes]]) -> RequestHead:
    """The request's framing and credentials from its (name, value) fields; refuses
    ambiguous framing."""
    head = RequestHead()
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for name, raw_value in fields:
        value = raw_value.strip(b" \t")
        key = name.lower()
        if key == b"content-length":
            if b"," in value:
                lengths.extend(v.strip(b" \t") for v in value.split(b","))
            else:
                lengths.append(value)
        elif key == b"transfer-encoding":
            codings.extend(v.strip(b" \t").lower() for v in value.split(b","))
        elif key == b"authorization":
            if head.authorization is not None:
                raise BadRequest(400, "more than one Authorization header")
            head.authorization = value
        elif key == b"expect":
            head.expect_continue = value.lower() == b"100-continue"
    if codings:
        if lengths:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        if version == b"HTTP/1.0":
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings != [b"chunked"]:
            raise BadRequest(501, "only the chunked transfer coding is supported")
        head.chunked = True
    elif lengths:
        if any(not v.isdigit() or len(v) > 18 for v in lengths) or len(set(lengths)) != 1:
            raise BadRequest(400, "invalid Content-Length")
        head.content_length = int(lengths[0])
    return head


def parse_chunk_size(line: bytes) -> int:
    """The size announced by a chunk-size line (extensions ignored).

    Args:
        line: the line, ``\\r\\n`` included.

    Returns:
        The chunk's size in bytes (0: the last chunk).

    Raises:
        BadRequest: the line is malformed.
    """
    size, _, ext = line[:-2].partition(b";")
    size = size.rstrip(b" \t")
    if not _HEX.match(size) or not _FIELD_VALUE.match(ext):
        raise BadRequest(400, "malformed chunk size")
    return int(size, 16)


def bearer_matches(authorization: bytes | None, key: bytes) -> bool:
    """Tells whether an Authorization value is ``Bearer <key>``, in constant time.

    Args:
        authorization: the header's value (None when absent).
        key: the expected key.

    Returns:
        True if it matches.
    """
    if authorization is None:
        return False
    scheme, _, token = authorization.partition(b" ")
    ok_scheme = scheme.lower() == b"bearer"
    return hmac.compare_digest(token.strip(b" "), key) and ok_scheme


def error_response(status: int, reason: str) -> bytes:
    """A complete response that refuses a request and closes the connection.

    Args:
        status: HTTP status code.
        reason: a short explanation (the body).

    Returns:
        The response bytes.
    """
    body = json.dumps({"error": reason}).encode()
    extra = b"WWW-Authenticate: Bearer\r\n" if status == 401 else b""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n%s\r\n%s"
        % (status, _REASONS.get(status, "Error").encode(), len(body), extra, body)
    )
