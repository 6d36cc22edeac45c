"""zmd-vllm: deploy -> first completion vs the server started by hand, tokens/s streamed
through the deployment's relay vs the server's own port (1 and 8 streams), an update under a
looping client (a LoRA-adapter-only update, done in the running server, beside a full
restart), and the front's memory beside the server's, in the same run.

By default the server is the real `vllm serve` (vLLM's CPU build from `make vllm`, serving
SmolLM2-135M converted to bf16); on a GPU host ``bench/gpu/bench_vllm_gpu.py`` runs the same
measurements with a CUDA build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tests' vLLM helpers (the update under a looping client, a LoRA adapter built here).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import common as c  # noqa: E402

REPEATS = 3
STREAM_PAIRS = 5
STREAM_TOKENS = 32
REPO = Path(__file__).resolve().parents[1]
VLLM = REPO / ".venv" / "vllm" / "bin" / "vllm"
SMOL_DIR = REPO / ".venv" / "models" / "smollm2-135m-instruct"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
FIRST = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}


def _first_completion(base: str, model: str, timeout: float, proc: Any = None) -> float:
    """Polls a 4-token chat completion every 50 ms until the server answers it as `model`;
    returns the time it did."""
    body = json.dumps({**FIRST, "model": model, "temperature": 0}).encode()
    url = base + "/v1/chat/completions"
    return c.wait_prediction(
        url, model, timeout, proc=proc, body=body, key="model", request_timeout=120
    )


def _streams_tokens_per_s(base: str, model: str, streams: int = 1) -> float:
    """`streams` streamed chat completions of STREAM_TOKENS tokens at once: content chunks
    per second of wall time, all streams together."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        chunks = sum(pool.map(lambda _: _stream_chunks(base, model), range(streams)))
    return chunks / (time.perf_counter() - t0)


def _tree_rss(pid: int) -> float:
    """Resident memory of a process and its descendants, GiB."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**30


def _stream_chunks(base: str, model: str) -> int:
    """One streamed chat completion of STREAM_TOKENS tokens: its content chunks."""
    import requests

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story about a robot."}],
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    chunks = 0
    with requests.post(base + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0].get("delta", {}).get("content"):
                chunks += 1
    return chunks


def run_with(
    *,
    name: str,
    model: str,
    executable: str,
    require_gpu: bool,
    settings: dict[str, Any] | None = None,
    repeats: int = REPEATS,
    timeout: float = 300.0,
    streams: tuple[int, ...] = (1, 8),
    lora: bool = False,
    executor_pair: bool = False,
) -> dict[str, Any]:
    """Both measurements for one server command (the stand-in, or the real `vllm`).

    Args:
        name: the benchmark's name.
        model: the model to serve.
        executable: the `vllm`-speaking command.
        require_gpu: the flavor's GPU check.
        settings: further deployment settings (e.g. max_model_len).
        repeats: deploy repeats per variant.
        timeout: seconds per deploy.
        streams: concurrent streams to measure tokens/s at.
        lora: serve a LoRA adapter of SmolLM2 (built here) and measure an adapter-only update
            beside the full restart (SmolLM2 only: the adapter has its shapes).
        executor_pair: also start the server by hand with vLLM's default executor (three
            processes) and with the `uni` one (the CPU default), alternating: start time and
            the tree's memory.

    Returns:
        The result (title, tables, goals, notes).
    """
    root = c.isolated_env(name)
    from zenml_model_deployers.flavors.vllm.preflight import check_host

    check_host(executable, require_gpu)  # no vllm / no GPU: the flavor's own error, at once
    c.zmd_stack(flavor="zmd-vllm")
    from vllm_support import make_lora_adapter, update_under_loop

    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.vllm.service import (
        VLLMDeploymentConfig,
        VLLMDeploymentService,
    )

    deployer = get_deployer("zmd-vllm")
    extra = {"served_model_name": "bench-llm", **(settings or {})}
    if lora:
        adapter = make_lora_adapter(root / "lora" / "a1", seed=1, scale=0.5)
        extra.update(lora_adapters={"bench-lora": adapter}, max_lora_rank=8)

    def config(i: int, **more: Any) -> VLLMDeploymentConfig:
        return VLLMDeploymentConfig(
            deployment_name=f"bench-llm-{i}",
            model_uri=model,
            executable=executable,
            require_gpu=require_gpu,
            **{**extra, **more},
        )

    def raw(i: int, rss: list[float] | None = None, **more: Any) -> float:
        port = c.free_port()
        # The exact command and environment the flavor gives the server (e.g. the CPU build's
        # VLLM_CPU_KVCACHE_SPACE).
        by_hand = VLLMDeploymentService.model_construct(config=config(i, **more))
        argv, env = by_hand.server_command(port), by_hand.server_env()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=open(root / f"raw-{i}.log", "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            t1 = _first_completion(f"http://127.0.0.1:{port}", "bench-llm", timeout, proc)
            if rss is not None:
                rss.append(_tree_rss(proc.pid))
        finally:
            c.terminate_tree(proc.pid, 30)
        return t1 - t0

    def ours(i: int) -> float:
        t0 = time.perf_counter()
        svc = deployer.deploy(config(100 + i), timeout=timeout)
        try:
            assert svc.base_url
            t1 = _first_completion(svc.base_url, "bench-llm", timeout)
        finally:
            deployer.delete(svc)
        return t1 - t0

    times: dict[str, list[float]] = {"raw": [], "ours": []}
    for i in range(repeats):
        for kind in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            dt = raw(i) if kind == "raw" else ours(i)
            times[kind].append(dt)
            print(f"  deploy {i + 1}: {kind:5s} {dt:6.2f} s", file=sys.stderr, flush=True)

    # vLLM's default executor (API server, EngineCore, worker) against `uni` (the model in
    # the EngineCore: the flavor's CPU default), by hand, one pair or more, alternating.
    executors: dict[str, dict[str, list[float]]] = {}
    if executor_pair:
        for uni in (False, True):
            executors["uni" if uni else "default"] = {"s": [], "gib": []}
        for i in range(1 if repeats < 3 else 2):
            for uni in (False, True) if i % 2 == 0 else (True, False):
                row = executors["uni" if uni else "default"]
                row["s"].append(raw(200 + i, row["gib"], uni_executor=uni))
                print(
                    f"  executor {'uni' if uni else 'default'}: {row['s'][-1]:6.2f} s, "
                    f"{row['gib'][-1]:.2f} GiB",
                    file=sys.stderr,
                    flush=True,
                )

    # Tokens/s: one deployment; streamed completions alternate between the relay's URL and
    # the server's private port (same server, same prompt, greedy: the same tokens).
    svc = deployer.deploy(config(999), timeout=timeout)
    rates: dict[str, list[float]] = {}
    update: dict[str, Any] = {}
    try:
        assert svc.base_url
        direct = f"http://127.0.0.1:{svc.status.server_port}"  # type: ignore[attr-defined]
        _streams_tokens_per_s(direct, "bench-llm")  # warm-up (prompt cache)
        for n in streams:
            rates[f"direct x{n}"], rates[f"relay x{n}"] = [], []
            for i in range(STREAM_PAIRS):
                for kind in ("direct", "relay") if i % 2 == 0 else ("relay", "direct"):
                    url = direct if kind == "direct" else svc.base_url
                    rates[f"{kind} x{n}"].append(_streams_tokens_per_s(url, "bench-llm", n))
        print(f"  tokens/s: {rates}", file=sys.stderr, flush=True)
        update["front_gib"] = _tree_rss(svc.status.relay.pid)  # type: ignore[attr-defined]
        update["server_gib"] = _tree_rss(svc.status.server.pid)  # type: ignore[attr-defined]
        if lora:
            # Another adapter under the same name (and a second one), while a client loops
            # on that adapter: loaded in the running server.
            pid = svc.status.server.pid  # type: ignore[attr-defined]
            changed = {
                "bench-lora": make_lora_adapter(root / "lora" / "a2", seed=2, scale=0.5),
                "bench-lora-b": make_lora_adapter(root / "lora" / "b", seed=3, scale=0.5),
            }
            cfg = svc.config.model_copy(update={"lora_adapters": changed})
            request = {**FIRST, "model": "bench-lora", "max_tokens": 2}
            svc, loop, seconds = update_under_loop(deployer, svc, cfg, request, timeout)
            update["lora"] = {
                "seconds": seconds,
                "ok": loop.ok,
                "failed": len(loop.failures),
                "same_server": svc.status.server.pid == pid,  # type: ignore[attr-defined]
            }
        # An update to another served name under a client looping on the URL: a new server.
        new_cfg = svc.config.model_copy(update={"served_model_name": "bench-llm-b"})
        svc, loop, seconds = update_under_loop(deployer, svc, new_cfg, dict(FIRST), timeout)
        update.update(
            seconds=seconds,
            ok=loop.ok,
            failed=len(loop.failures),
            answers_new=svc.complete("Hi", max_tokens=2)["model"] == "bench-llm-b",
        )
        print(f"  update: {update}", file=sys.stderr, flush=True)
    finally:
        deployer.delete(svc)

    # The machine is shared: a pair runs back to back, so the median of per-pair ratios is
    # what compares like with like; the ratio of medians is shown too.
    med = {k: c.median(v) for k, v in times.items()}
    ratio = c.median(o / r for o, r in zip(times["ours"], times["raw"], strict=True))
    rate = {k: c.median(v) for k, v in rates.items()}
    rate_ratio = {
        n: c.median(r / d for r, d in zip(rates[f"relay x{n}"], rates[f"direct x{n}"], strict=True))
        for n in streams
    }
    return {
        "name": name,
        "title": f"vLLM ({Path(executable.split()[-1]).name}, {Path(model).name}): deploy -> "
        "first completion, streamed tokens/s through the relay, update, memory",
        "method": (
            f"Median of {repeats} deploys per variant, alternating. (a) the server command "
            "started by hand (`Popen`, the exact argv the flavor runs), polled with a 4-token "
            "chat completion every 50 ms; (b) `deployer.deploy` (relay + server + readiness: "
            "`/health` and `/v1/models`), then the same completion through the stable URL. "
            f"Tokens/s: {STREAM_PAIRS} pairs of {', '.join(map(str, streams))} concurrent "
            f"streamed {STREAM_TOKENS}-token greedy chat completions, alternating the server's "
            "own port and the relay, after one warm-up; content chunks per second of wall time, "
            "all streams together. Update: a new served name deployed while a client loops "
            "on the URL (a new server); with LoRA (the CPU run: every server takes adapters, "
            "`--enable-lora --max-lora-rank 8`, serving one rank-8 adapter), first an update "
            "that replaces that adapter and adds one, while a client loops on the adapter "
            "(done in the running server). Memory: RSS of the front (relay) and of the "
            "server's process tree."
            + (
                " Executor: the same by-hand start with `uni_executor=False` (vLLM's default: "
                "API server, EngineCore, worker) and with the flavor's CPU default (`uni`: "
                "the model in the EngineCore), alternating; the tree's RSS once it answered."
                if executors
                else ""
            )
        ),
        "tables": [
            {
                "caption": "Deploy -> first completion",
                "headers": ["variant", "runs (s)", "median", "ratio to by hand (pairs)"],
                "rows": [
                    [
                        "(a) server started by hand",
                        ", ".join(f"{x:.2f}" for x in times["raw"]),
                        c.fmt_s(med["raw"]),
                        "1.00x",
                    ],
                    [
                        "(b) ours: `deployer.deploy` (zmd-vllm)",
                        ", ".join(f"{x:.2f}" for x in times["ours"]),
                        c.fmt_s(med["ours"]),
                        c.fmt_ratio(ratio),
                    ],
                ],
            },
            *(
                [
                    {
                        "caption": "vLLM's executor, by hand: default (3 processes) vs `uni`",
                        "headers": ["executor", "start -> first completion (s)", "tree RSS (GiB)"],
                        "rows": [
                            [
                                k,
                                ", ".join(f"{x:.2f}" for x in v["s"]),
                                ", ".join(f"{x:.2f}" for x in v["gib"]),
                            ]
                            for k, v in executors.items()
                        ],
                    }
                ]
                if executors
                else []
            ),
            {
                "caption": "Streamed tokens/s (same server)",
                "headers": ["path", "runs (tokens/s)", "median", "ratio to direct (pairs)"],
                "rows": [
                    [
                        k,
                        ", ".join(f"{x:.1f}" for x in rates[k]),
                        f"{rate[k]:.1f}",
                        c.fmt_ratio(rate_ratio[int(k.split("x")[-1])] if "relay" in k else 1.0),
                    ]
                    for k in rates
                ],
            },
            {
                "caption": "Update under a looping client, and memory",
                "headers": [
                    "update",
                    "seconds",
                    "requests ok",
                    "failed",
                    "front RSS",
                    "server tree RSS",
                ],
                "rows": [
                    *(
                        [
                            [
                                "LoRA adapters only (in the running server"
                                + (")" if update["lora"]["same_server"] else ": RESTARTED)"),
                                f"{update['lora']['seconds']:.2f}",
                                update["lora"]["ok"],
                                update["lora"]["failed"],
                                "",
                                "",
                            ]
                        ]
                        if "lora" in update
                        else []
                    ),
                    [
                        "new served name (new server)"
                        + ("" if update["answers_new"] else ": OLD NAME AFTER"),
                        f"{update['seconds']:.1f}",
                        update["ok"],
                        update["failed"],
                        f"{update['front_gib'] * 1024:.0f} MiB",
                        f"{update['server_gib']:.2f} GiB",
                    ],
                ],
            },
        ],
        "goals": [
            {
                "goal": "deploy -> first completion <= 1.05x by hand",
                "value": c.fmt_ratio(ratio),
                "met": ratio <= 1.05,
            },
            *[
                {
                    "goal": f"tokens/s through the relay >= 0.97x direct, {n} stream(s)",
                    "value": c.fmt_ratio(rate_ratio[n]),
                    "met": rate_ratio[n] >= 0.97,
                }
                for n in streams
            ],
            {
                "goal": "update: 0 failed requests, new answers after",
                "value": f"{update['failed']} failed of {update['ok'] + update['failed']}",
                "met": update["failed"] == 0 and update["answers_new"],
            },
            *(
                [
                    {
                        "goal": "LoRA-only update: no restart, 0 failed, faster than a restart",
                        "value": f"{update['lora']['seconds']:.2f} s vs "
                        f"{update['seconds']:.1f} s, {update['lora']['failed']} failed",
                        "met": update["lora"]["same_server"]
                        and update["lora"]["failed"] == 0
                        and update["lora"]["seconds"] < update["seconds"],
                    }
                ]
                if "lora" in update
                else []
            ),
        ],  # fmt: skip
        "notes": [
            f"Ratio of medians: deploy {c.fmt_ratio(med['ours'] / med['raw'])}.",
        ],
        "data": {
            "times": times,
            "rates": rates,
            "ratio": ratio,
            "rate_ratio": rate_ratio,
            "update": update,
            "executors": executors,
        },
    }


def run() -> dict[str, Any]:
    """The real vLLM on CPU (what `make bench` runs; `make vllm` installs it)."""
    if not VLLM.is_file() or not (SMOL_DIR / "config.json").is_file():
        raise SystemExit(f"the real vLLM ({VLLM}) or its model ({SMOL_DIR}) is missing: make vllm")
    return run_with(
        name="vllm",
        model=str(SMOL_DIR),
        executable=str(VLLM),
        require_gpu=False,
        settings={"max_model_len": 512, "dtype": "bfloat16", "cpu_kvcache_space": 1},
        timeout=900.0,
        lora=True,
        executor_pair=True,
    )


if __name__ == "__main__":
    c.main_for("vllm", run)
