"""The relay under attackers and bad clients (fast: plain HTTP servers, no model server).

Each test is bounded in time; after each one the relay still runs and still serves a normal
client (the `relay` fixture checks it at teardown).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import psutil
import pytest
import requests
from relay_support import KEY, Backend, StartRelay, read_all, read_response, start_relay

__all__ = ["start_relay"]  # the fixture, imported by name


def _status(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw[9:12])


POST = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


# --------------------------------------------------------------------------- control channel
def test_an_unauthenticated_switch_is_refused_and_the_model_keeps_answering(
    start_relay: StartRelay,
) -> None:
    relay = start_relay()
    impostor = Backend("impostor")
    relay.backends.append(impostor)
    flipped = relay.token[:-1] + ("1" if relay.token[-1] == "0" else "0")
    for token in (None, "", "wrong", flipped):
        msg: dict[str, Any] = {"cmd": "switch", "port": impostor.port}
        if token is not None:
            msg["token"] = token
        with socket.create_connection(("127.0.0.1", relay.control_port), timeout=5) as s:
            s.sendall((json.dumps(msg) + "\n").encode())
            reply = json.loads(s.makefile().readline())
        assert reply == {"ok": False, "error": "unauthenticated"}
    assert requests.post(relay.url + "/p", json={}, timeout=5).json()["answer"] == "old"
    assert impostor.seen == []
    assert "refused an unauthenticated control command 'switch'" in relay.log.read_text()
    # The owner, with the token from the 0600 ready file, still controls it.
    assert relay.control({"cmd": "status"})["target"] == relay.backends[0].port


def test_the_ready_file_holding_the_token_is_private(start_relay: StartRelay) -> None:
    relay = start_relay()
    ready = relay.log.parent / "ready-0.json"
    assert ready.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- API key
def test_the_api_key_is_required_checked_and_never_in_argv(start_relay: StartRelay) -> None:
    relay = start_relay(key=KEY)
    url = relay.url + "/invocations"
    assert requests.post(url, json={}, timeout=5).status_code == 401
    wrong = requests.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    basic = requests.post(url, json={}, headers={"Authorization": f"Basic {KEY}"}, timeout=5)
    assert basic.status_code == 401
    ok = requests.post(url, json={}, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["answer"] == "old"
    assert [p for p, _ in relay.backends[0].seen] == ["/invocations"]  # refused: never forwarded
    cmdline = " ".join(psutil.Process(relay.proc.pid).cmdline())
    assert KEY not in cmdline
    assert KEY not in relay.log.read_text()
    assert KEY not in wrong.text


def test_closed_paths_are_refused_to_every_client_however_spelled(
    start_relay: StartRelay,
) -> None:
    """A server's admin routes (`--closed-path`) never reach it through the relay: 403 with the
    key, for the path, what lies under it, and its percent-encoded or doubled-slash spellings;
    other paths pass."""
    relay = start_relay("--closed-path", "/v1/load_lora_adapter", "--closed-path", "/adapters")
    headers = {"Authorization": f"Bearer {KEY}"}
    for path in (
        "/v1/load_lora_adapter",
        "/v1/load%5Flora_adapter?x=1",
        "//v1//load_lora_adapter",
        "/adapters",
        "/adapters/name",
    ):
        r = requests.post(relay.url + path, json={}, headers=headers, timeout=5)
        assert r.status_code == 403, path
    assert relay.backends[0].seen == []
    ok = requests.post(relay.url + "/v1/load_lora_adapterX", json={}, headers=headers, timeout=5)
    assert ok.status_code == 200 and [p for p, _ in relay.backends[0].seen] == [
        "/v1/load_lora_adapterX"
    ]


# --------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    "bad",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /p\r\n\r\n",
        b"POST  /p HTTP/1.1\r\n\r\n",
        b"POST /p HTTP/9.9\r\n\r\n",
        b"POST /p HTTP/1.1\r\nNo-Colon\r\n\r\n",
        b"POST /p HTTP/1.1\r\nName : v\r\n\r\n",
        b"POST /p HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"POST /p HTTP/1.1\r\nA: b\rc\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_are_refused_before_any_server_sees_them(
    start_relay: StartRelay, bad: bytes
) -> None:
    relay = start_relay()
    answer = relay.raw(bad)
    assert _status(answer) in (400, 501, 505)
    assert b"Connection: close" in answer
    assert relay.backends[0].seen == []


def test_huge_headers_get_431(start_relay: StartRelay) -> None:
    relay = start_relay()
    big = b"POST /p HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    assert _status(relay.raw(big, shut=False)) == 431
    many = b"POST /p HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    assert _status(relay.raw(many)) == 431
    assert relay.backends[0].seen == []


def test_a_content_length_that_lies(start_relay: StartRelay) -> None:
    relay = start_relay("--idle-timeout", "1")
    # Shorter than the body: the server gets exactly the announced bytes; the rest is parsed
    # as a next request, which is malformed: refused, never forwarded.
    answer = relay.raw(b"POST /short HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 400" in answer
    assert relay.backends[0].seen == [("/short", b"{}")]
    # Longer than the body, and the client goes silent: the idle timeout frees the connection.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(b"POST /long HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{}")
        read_all(s)
    assert time.monotonic() - t0 < 5


def test_content_length_with_transfer_encoding_is_refused(start_relay: StartRelay) -> None:
    relay = start_relay()
    smuggle = (
        b"POST /p HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    )
    answer = relay.raw(smuggle)
    assert _status(answer) == 400 and answer.count(b"HTTP/1.1") == 1
    assert relay.backends[0].seen == []


def test_a_request_is_never_split_between_two_revisions(start_relay: StartRelay) -> None:
    relay = start_relay()
    old, new = relay.backends[0], Backend("new")
    relay.backends.append(new)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(b"POST /chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.3)  # the relay forwarded the first chunk to the old server
        assert relay.control({"cmd": "switch", "port": new.port})["ok"]
        # The rest of the body, with what looks like a request inside a chunk.
        inner = b"GET /smuggled HTTP/1.1\r\n\r\n"
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner))
        assert read_response(s)["answer"] == "old"
        s.sendall(POST)  # the next request moves to the new revision
        assert read_response(s)["answer"] == "new"
    assert old.seen == [("/chunked", b"hello" + inner)]
    assert new.seen == [("/p", b"{}")]


def test_pipelined_requests_are_answered_in_order_by_one_server(start_relay: StartRelay) -> None:
    relay = start_relay()
    new = Backend("new")
    relay.backends.append(new)
    reqs = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % i for i in range(5)
    )
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(reqs[: len(reqs) // 2])
        relay.control({"cmd": "switch", "port": new.port})
        s.sendall(reqs[len(reqs) // 2 :])
        s.shutdown(socket.SHUT_WR)
        answer = read_all(s)
    bodies = [json.loads(part.split(b"HTTP/1.")[0]) for part in answer.split(b"\r\n\r\n")[1:]]
    assert [b["path"] for b in bodies] == [f"/{i}" for i in range(5)]
    assert len({b["answer"] for b in bodies}) == 1


# --------------------------------------------------------------------------- slow and idle clients
def test_a_client_that_never_finishes_its_head_is_cut_off(start_relay: StartRelay) -> None:
    relay = start_relay("--header-timeout", "1", "--idle-timeout", "1")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(b"POST /p HTTP/1.1\r\nX-Slow: ")
        for _ in range(3):  # keeps trickling: the header deadline still applies
            time.sleep(0.4)
            try:
                s.sendall(b"a")
            except OSError:
                break
        answer = read_all(s)
    assert _status(answer) == 408
    assert time.monotonic() - t0 < 4
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        t0 = time.monotonic()
        assert read_all(s) == b""  # silent after connecting: closed by the idle timeout
        assert 0.5 < time.monotonic() - t0 < 4
    deadline = time.monotonic() + 5
    while relay.control({"cmd": "status"})["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.control({"cmd": "status"})["connections"] == {}


def test_many_idle_connections_cannot_lock_out_clients(start_relay: StartRelay) -> None:
    relay = start_relay("--max-connections", "8")
    idle = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(20)]
    try:
        time.sleep(1.2)  # idle long enough to be evicted
        for _ in range(5):
            r = requests.post(relay.url + "/p", json={}, timeout=5)
            assert r.status_code == 200
        assert relay.control({"cmd": "status"})["refused"] >= 12  # past the cap at once
    finally:
        for s in idle:
            s.close()


def test_busy_connections_at_the_cap_refuse_cleanly(start_relay: StartRelay) -> None:
    relay = start_relay("--max-connections", "4")
    busy = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(s)
        time.sleep(0.3)
        refused = relay.raw(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(refused) == 503
        for s in busy:  # the busy ones are all answered
            assert read_response(s)["path"] == "/slow"
    finally:
        for s in busy:
            s.close()
    deadline = time.monotonic() + 5  # the relay sees the closes, and frees their places
    while relay.control({"cmd": "status"})["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_body_larger_than_the_replay_buffer_is_forwarded_with_bounded_memory(
    start_relay: StartRelay,
) -> None:
    relay = start_relay("--replay-limit", "65536")
    rss0 = psutil.Process(relay.proc.pid).memory_info().rss
    size = 48 << 20
    body = b"z" * size
    r = requests.post(relay.url + "/big", data=body, timeout=60)
    assert r.status_code == 200 and r.json()["len"] == size
    grown = psutil.Process(relay.proc.pid).memory_info().rss - rss0
    assert grown < 16 << 20, f"relay grew by {grown >> 20} MiB for a {size >> 20} MiB body"


def test_expect_100_continue_passes_through(start_relay: StartRelay) -> None:
    relay = start_relay()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(
            b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = s.recv(65536)  # the server's go-ahead, before any body byte was sent
        assert interim.startswith(b"HTTP/1.1 100")
        s.sendall(b"{}")
        assert read_response(s)["path"] == "/expect"
    assert relay.backends[0].seen == [("/expect", b"{}")]
