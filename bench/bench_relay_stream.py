"""The relay's cost on a streamed answer (Server-Sent Events, as an OpenAI-style LLM server
streams tokens): latency added per chunk, and the relay's CPU time per chunk.

No model: a minimal asyncio server answers each request with CHUNKS events (each stamped with
the time it was written, one write each, GAP seconds apart, chunked transfer encoding, like
vLLM's stream). The client reads the stream line by line, direct and through the relay (with
vLLM's closed paths set, as zmd-vllm's front has them), in alternating pairs; a chunk's latency
is the time from its write to the client reading it (the same host's monotonic clock). The
relay's CPU time (user + system) per chunk does not depend on what else runs on the machine.

Usage: ``.venv/bin/python bench/bench_relay_stream.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

CHUNKS = 400
GAP = 0.002
PAIRS = 10


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(ln.split(b":")[1])
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for i in range(CHUNKS):
                event = json.dumps({"i": i, "t": time.perf_counter(), "pad": "x" * 160})
                data = b"data: " + event.encode() + b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                await asyncio.sleep(GAP)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(port: list[int]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _read_stream(port: int) -> tuple[float, float]:
    """One streamed answer: (median chunk latency in s, chunks per second)."""
    import requests

    latencies: list[float] = []
    t0 = time.perf_counter()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with requests.post(url, json={"stream": True}, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                latencies.append(time.perf_counter() - json.loads(line[6:])["t"])
    return c.median(latencies), len(latencies) / (time.perf_counter() - t0)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run() -> dict[str, Any]:
    """Direct vs through the relay, alternating pairs."""
    from zenml_model_deployers.flavors.vllm.lora import ADMIN_PATHS

    root = c.isolated_env("relay-stream")
    box: list[int] = []
    threading.Thread(target=_serve, args=(box,), daemon=True).start()
    while not box:
        time.sleep(0.01)
    ready = root / "relay.json"
    argv = [sys.executable, "-m", "zenml_model_deployers.local.relay", "--port", "0"]
    argv += ["--target", str(box[0]), "--ready-file", str(ready)]
    for path in ADMIN_PATHS:
        argv += ["--closed-path", path]
    relay = c.start_logged(argv, root / "relay.log")
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert relay.poll() is None and time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.02)
        relay_port = int(json.loads(ready.read_text())["port"])
        _read_stream(relay_port)  # warm-up
        runs: dict[str, list[tuple[float, float]]] = {"direct": [], "relay": []}
        cpu: list[float] = []
        load = [os.getloadavg()[0]]
        for i in range(PAIRS):
            for kind in ("direct", "relay") if i % 2 == 0 else ("relay", "direct"):
                before = _cpu_seconds(relay.pid)
                runs[kind].append(_read_stream(box[0] if kind == "direct" else relay_port))
                if kind == "relay":
                    cpu.append((_cpu_seconds(relay.pid) - before) / CHUNKS)
        load.append(os.getloadavg()[0])
    finally:
        c.terminate_tree(relay.pid)
    lat = {k: c.median(x[0] for x in v) for k, v in runs.items()}
    rate = {k: c.median(x[1] for x in v) for k, v in runs.items()}
    added = lat["relay"] - lat["direct"]
    return {
        "name": "relay-stream",
        "title": "The relay on a streamed (SSE) answer: latency and CPU per chunk",
        "method": (
            f"{PAIRS} alternating pairs of one streamed answer of {CHUNKS} chunks ({GAP * 1000:.0f} ms "
            "apart, ~200 bytes each, chunked encoding), read line by line with `requests`, "
            "direct and through the relay (vLLM's closed paths set); chunk latency = write to "
            "read, median per answer, then the median of answers; the relay's user+system CPU "
            f"time over each relayed answer / {CHUNKS}. Load average {load[0]:.1f} -> {load[1]:.1f}."
        ),
        "tables": [
            {
                "caption": "Per chunk",
                "headers": ["path", "chunk latency (median)", "chunks/s", "relay CPU per chunk"],
                "rows": [
                    ["direct", c.fmt_ms(lat["direct"]), f"{rate['direct']:.0f}", ""],
                    [
                        "through the relay",
                        c.fmt_ms(lat["relay"]),
                        f"{rate['relay']:.0f}",
                        f"{c.median(cpu) * 1e6:.0f} µs",
                    ],
                ],
            }
        ],
        "goals": [
            {
                "goal": "the relay adds < 1 ms per streamed chunk",
                "value": c.fmt_ms(added),
                "met": added < 0.001,
            }
        ],
        "notes": [
            "A token of SmolLM2-135M on vLLM's CPU build takes 40-70 ms here: the relay's cost "
            "per chunk is a thousandth of it.",
        ],
        "data": {"runs": runs, "cpu_per_chunk": cpu, "load": load},
    }


if __name__ == "__main__":
    c.main_for("relay-stream", run)
