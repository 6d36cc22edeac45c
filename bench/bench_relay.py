"""The relay's own cost: p50 latency added and throughput, against a baseline relay, same run.

No model server: the backend is a minimal asyncio HTTP server (fixed JSON answer), so what is
measured is the front alone. Targets, each in front of the same backend:

- ``direct``: the backend's port (reference);
- ``base:REV``: the relay as committed at each ``--base REV`` (repeatable; default ``main``),
  run from a copy of its file (it imports the working tree's ``http1``);
- ``relay``: the relay of this working tree;
- ``relay+key``: the same with an API key required (every request carries ``Authorization``).

Latency: kept-alive ``http.client`` POSTs, 2000 per target interleaved in blocks of 200 after a
warm-up; p50 and p90. Throughput: 16 kept-alive connections from one asyncio client process for
3 s per target, targets rotated over 3 rounds; median requests/s. On a shared machine the client
and the backend compete with the relay for the cores, so the relay's own CPU time per request
(user + system, from /proc, over the throughput runs) is also reported: it does not depend on
what else runs.

The relay of this tree counts per-revision metrics (``relay_metrics.py``): they are on.

Usage: ``.venv/bin/python bench/bench_relay.py [--base REV ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = b'{"inputs": [[1.0, 2.0]]}'
KEY = "bench-key-0123456789abcdef"
N, BLOCK, WARMUP = 2000, 200, 200
TP_SECONDS, TP_CONNS, TP_ROUNDS = 3.0, 16, 3


# ----------------------------------------------------------------------------- backend
async def _backend(port_file: str) -> None:
    answer = b'{"predictions": [0]}'
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(answer),
        answer,
    )

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                if n:
                    await r.readexactly(n)
                w.write(resp)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    Path(port_file).write_text(str(srv.sockets[0].getsockname()[1]))
    await srv.serve_forever()


# ----------------------------------------------------------------------------- throughput client
async def _load(port: int, seconds: float, conns: int, key: str) -> int:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    req = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    done = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal done
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(n)
            done += 1
        w.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return done


# ----------------------------------------------------------------------------- helpers
def base_relays(bases: list[str], tmp: Path) -> dict[str, Path]:
    """Copies of the relay as committed at each revision (run with the tree's package).

    Args:
        bases: git revisions.
        tmp: where to write them.

    Returns:
        revision -> file.
    """
    out = {}
    for i, rev in enumerate(bases):
        out[rev] = tmp / f"relay_base{i}.py"
        out[rev].write_text(
            subprocess.run(
                ["git", "show", f"{rev}:src/zenml_model_deployers/local/relay.py"],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    return out


def start_relay(
    argv: list[str], target: int, tmp: Path, name: str, key: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts a relay (argv without its options) in front of `target`; returns it and its port."""
    ready = tmp / f"{name}.json"
    env = dict(os.environ)
    if key:
        env["ZMD_RELAY_API_KEY"] = key
    p = subprocess.Popen(
        [*argv, "--port", "0", "--target", str(target), "--ready-file", str(ready)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} relay did not start")
        time.sleep(0.02)
    return p, int(json.loads(ready.read_text())["port"])


def _latencies(ports: dict[str, int]) -> dict[str, list[float]]:
    conns = {k: http.client.HTTPConnection("127.0.0.1", p) for k, p in ports.items()}
    out: dict[str, list[float]] = {k: [] for k in ports}

    def call(k: str) -> None:
        headers = {"Content-Type": "application/json"}
        if k.endswith("+key"):
            headers["Authorization"] = f"Bearer {KEY}"
        conns[k].request("POST", "/invocations", body=BODY, headers=headers)
        r = conns[k].getresponse()
        r.read()
        assert r.status == 200, (k, r.status)

    for k in ports:
        for _ in range(WARMUP):
            call(k)
    names = list(ports)
    for b in range(N // BLOCK):
        order = names[b % len(names) :] + names[: b % len(names)]
        for k in order:
            for _ in range(BLOCK):
                t = time.perf_counter()
                call(k)
                out[k].append(time.perf_counter() - t)
    for c in conns.values():
        c.close()
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if q != 50 else statistics.median(xs)


def main() -> None:
    """Runs the benchmark and prints the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", action="append", help="baseline revision (repeatable)")
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backend:
        asyncio.run(_backend(args.backend))
        return
    if args.load:
        port, seconds, key = int(args.load[0]), float(args.load[1]), args.load[2]
        print(asyncio.run(_load(port, seconds, TP_CONNS, "" if key == "-" else key)))
        return

    bases = args.base or ["main"]
    tmp = Path(tempfile.mkdtemp(prefix="zmd-bench-relay-"))
    base_files = base_relays(bases, tmp)
    port_file = tmp / "backend.port"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, __file__, "--backend", str(port_file)]))
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            assert time.monotonic() < deadline, "backend did not start"
            time.sleep(0.02)
        backend = int(port_file.read_text())
        ports = {"direct": backend}
        pids: dict[str, int] = {}
        mod = [sys.executable, "-m", "zenml_model_deployers.local.relay"]
        targets = [(f"base:{rev}", [sys.executable, str(f)], "") for rev, f in base_files.items()]
        targets += [("relay", mod, ""), ("relay+key", mod, KEY)]
        for i, (name, argv, key) in enumerate(targets):
            p, port = start_relay(argv, backend, tmp, f"t{i}", key)
            procs.append(p)
            ports[name] = port
            pids[name] = p.pid
        lat = _latencies(ports)
        rps: dict[str, list[float]] = {k: [] for k in ports}
        cpu: dict[str, float] = {k: 0.0 for k in pids}
        done: dict[str, int] = {k: 0 for k in pids}
        names = list(ports)
        for rnd in range(TP_ROUNDS):
            for k in names[rnd % len(names) :] + names[: rnd % len(names)]:
                cpu0 = _cpu_seconds(pids[k]) if k in pids else 0.0
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--load",
                        str(ports[k]),
                        str(TP_SECONDS),
                        KEY if k.endswith("+key") else "-",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rps[k].append(int(out.stdout.strip()) / TP_SECONDS)
                if k in pids:
                    cpu[k] += _cpu_seconds(pids[k]) - cpu0
                    done[k] += int(out.stdout.strip())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    d50 = _pct(lat["direct"], 50)
    print(
        f"relay benchmark (baselines: {', '.join(bases)}); latency over {N} kept-alive POSTs "
        f"each; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    w = max(11, *(len(k) for k in ports))
    print(
        f"{'target':<{w}} {'p50 ms':>8} {'p90 ms':>8} {'added p50':>10} {'req/s':>9} {'x direct':>9}"
        f" {'CPU us/req':>11}"
    )
    for k in ports:
        p50, p90 = _pct(lat[k], 50), _pct(lat[k], 90)
        r = statistics.median(rps[k])
        print(
            f"{k:<{w}} {p50 * 1e3:8.3f} {p90 * 1e3:8.3f} {(p50 - d50) * 1e3:10.3f} "
            f"{r:9.0f} {r / statistics.median(rps['direct']):9.2f}"
            + (f" {cpu[k] / done[k] * 1e6:11.1f}" if k in pids else f" {'-':>11}")
        )


if __name__ == "__main__":
    main()
