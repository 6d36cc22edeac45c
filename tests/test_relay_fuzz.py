"""Fuzzing the relay's connection handling (hypothesis; bounded: 600 examples, about 10 s).

Inputs are arbitrary bytes and requests built from tricky parts (framing headers with odd
values, line endings, chunked bodies, several requests in a row), sent in one to three pieces.
After every input, the relay must have answered with well-formed responses only (or closed)
and still run; at the end its log holds no unhandled error and it still serves a normal request.
"""

from __future__ import annotations

import socket

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_support import Relay, StartRelay, read_all, start_relay

__all__ = ["start_relay"]  # the fixture, imported by name

_ALLOWED = {b"100", b"200", b"400", b"401", b"408", b"431", b"501", b"503", b"505"}

# Valid parts are listed several times: most inputs get past the request line, so that
# the framing (the part that matters for smuggling) is what varies most.
_eol = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\r\n"])
_framing = st.sampled_from(
    [
        b"Content-Length: 0",
        b"Content-Length: 3",
        b"Content-Length: 99999",
        b"Content-Length: -1",
        b"Content-Length: 3, 3",
        b"Content-Length: 3, 4",
        b"Content-Length : 3",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding: CHUNKED",
        b"Transfer-Encoding:\tchunked",
        b" Transfer-Encoding: chunked",
        b"Expect: 100-continue",
        b"Authorization: Bearer x",
        b"Host: x",
        b"Connection: close",
    ]
)
_method = st.sampled_from([b"POST"] * 4 + [b"GET", b"PUT", b"G ET", b"", b"\x00"])
_target = st.sampled_from([b"/invocations"] * 4 + [b"/", b"*", b"/a b", b"http://x/", b"/\xff"])
_version = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1 ", b"http/1.1"])
_chunked_body = st.lists(st.binary(max_size=20), max_size=3).map(
    lambda parts: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    eol = draw(_eol)
    line = draw(_method) + b" " + draw(_target) + b" " + draw(_version)
    headers = draw(st.lists(_framing, max_size=4))
    body = draw(st.one_of(st.binary(max_size=40), _chunked_body))
    return line + eol + b"".join(h + eol for h in headers) + eol + body


_payload = st.one_of(
    st.lists(_request(), min_size=1, max_size=3).map(b"".join),
    st.binary(max_size=300),
)


def _statuses(answer: bytes) -> list[bytes]:
    """The status codes of the whole responses a client received, in order (strict)."""
    out = []
    while answer:
        assert answer[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 "), answer[:300]
        head, sep, answer = answer.partition(b"\r\n\r\n")
        assert sep, head
        out.append(head[9:12])
        if head[9:10] == b"1":  # an interim answer (100 Continue to `Expect`) has no body
            continue
        length = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
        answer = answer[int(length[0].split(b":")[1]) if length else len(answer) :]
    return out


def _send(relay: Relay, payload: bytes, cuts: list[int]) -> bytes:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        start = 0
        for cut in sorted(c % (len(payload) + 1) for c in cuts) + [len(payload)]:
            try:
                s.sendall(payload[start:cut])
            except OSError:  # the relay refused and closed: fine
                break
            start = cut
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_all(s)


@pytest.mark.timeout(180)
def test_the_relay_survives_arbitrary_clients(start_relay: StartRelay) -> None:
    relay = start_relay("--header-timeout", "1", "--idle-timeout", "1")
    statuses: set[bytes] = set()

    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,  # the same inputs in CI every time
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(payload=_payload, cuts=st.lists(st.integers(0, 400), max_size=2))
    def one(payload: bytes, cuts: list[int]) -> None:
        answer = _send(relay, payload, cuts)
        found = _statuses(answer)
        assert set(found) <= _ALLOWED, answer[:300]
        statuses.update(found)
        assert relay.proc.poll() is None, relay.log.read_text()

    one()
    print(sorted(statuses))
    # The inputs reached both the server and the refusals (the fuzz exercised both paths).
    assert {b"200", b"400", b"501"} <= statuses, statuses
    assert "Traceback" not in relay.log.read_text()  # no unhandled error on any connection
    assert requests.post(relay.url + "/after-fuzz", json={}, timeout=10).status_code == 200
