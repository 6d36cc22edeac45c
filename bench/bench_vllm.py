"""zmd-vllm: deploy -> first completion vs the server started by hand, and tokens/s streamed
through the deployment's relay vs the server's own port, in the same run.

By default the server is the `vllm serve` stand-in (SmolLM2-135M on CPU, llama.cpp); on a GPU
host ``bench/gpu/bench_vllm_gpu.py`` runs the same measurements with the real `vllm serve`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

REPEATS = 7
STREAM_PAIRS = 10
STREAM_TOKENS = 32
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


def _stream_tokens_per_s(base: str, model: str) -> float:
    """One streamed chat completion of STREAM_TOKENS tokens: content chunks per second."""
    import requests

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story about a robot."}],
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    chunks = 0
    t0 = time.perf_counter()
    with requests.post(base + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0].get("delta", {}).get("content"):
                chunks += 1
    return chunks / (time.perf_counter() - t0)


def run_with(
    *,
    name: str,
    model: str,
    executable: str,
    require_gpu: bool,
    settings: dict[str, Any] | None = None,
    repeats: int = REPEATS,
    timeout: float = 300.0,
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

    Returns:
        The result (title, tables, goals, notes).
    """
    root = c.isolated_env(name)
    from zenml_model_deployers.flavors.vllm.preflight import check_host

    check_host(executable, require_gpu)  # no vllm / no GPU: the flavor's own error, at once
    c.zmd_stack(flavor="zmd-vllm")
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.vllm.service import (
        VLLMDeploymentConfig,
        VLLMDeploymentService,
    )

    deployer = get_deployer("zmd-vllm")
    extra = {"served_model_name": "bench-llm", **(settings or {})}

    def config(i: int) -> VLLMDeploymentConfig:
        return VLLMDeploymentConfig(
            deployment_name=f"bench-llm-{i}",
            model_uri=model,
            executable=executable,
            require_gpu=require_gpu,
            **extra,
        )

    def raw(i: int) -> float:
        port = c.free_port()
        argv = VLLMDeploymentService.model_construct(config=config(i)).server_command(port)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=open(root / f"raw-{i}.log", "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            t1 = _first_completion(f"http://127.0.0.1:{port}", "bench-llm", timeout, proc)
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

    # Tokens/s: one deployment; streamed completions alternate between the relay's URL and
    # the server's private port (same server, same prompt, greedy: the same tokens).
    svc = deployer.deploy(config(999), timeout=timeout)
    rates: dict[str, list[float]] = {"direct": [], "relay": []}
    try:
        assert svc.base_url
        direct = f"http://127.0.0.1:{svc.status.server_port}"  # type: ignore[attr-defined]
        _stream_tokens_per_s(direct, "bench-llm")  # warm-up (prompt cache)
        for i in range(STREAM_PAIRS):
            for kind in ("direct", "relay") if i % 2 == 0 else ("relay", "direct"):
                url = direct if kind == "direct" else svc.base_url
                rates[kind].append(_stream_tokens_per_s(url, "bench-llm"))
        print(f"  tokens/s: {rates}", file=sys.stderr, flush=True)
    finally:
        deployer.delete(svc)

    # The machine is shared: a pair runs back to back, so the median of per-pair ratios is
    # what compares like with like; the ratio of medians is shown too.
    med = {k: c.median(v) for k, v in times.items()}
    ratio = c.median(o / r for o, r in zip(times["ours"], times["raw"], strict=True))
    rate = {k: c.median(v) for k, v in rates.items()}
    rate_ratio = c.median(r / d for r, d in zip(rates["relay"], rates["direct"], strict=True))
    return {
        "name": name,
        "title": f"vLLM ({Path(executable.split()[-1]).name}, {model}): deploy -> first "
        "completion, and streamed tokens/s through the relay",
        "method": (
            f"Median of {repeats} deploys per variant, alternating. (a) the server command "
            "started by hand (`Popen`, the exact argv the flavor runs), polled with a 4-token "
            "chat completion every 50 ms; (b) `deployer.deploy` (relay + server + readiness: "
            "`/health` and `/v1/models`), then the same completion through the stable URL. "
            f"Tokens/s: {STREAM_PAIRS} pairs of streamed {STREAM_TOKENS}-token greedy chat "
            "completions, alternating the server's own port and the relay, after one warm-up; "
            "content chunks per second of wall time."
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
            {
                "caption": "Streamed tokens/s (same server)",
                "headers": ["path", "runs (tokens/s)", "median", "ratio to direct (pairs)"],
                "rows": [
                    [
                        k,
                        ", ".join(f"{x:.1f}" for x in rates[k]),
                        f"{rate[k]:.1f}",
                        c.fmt_ratio(rate_ratio if k == "relay" else 1.0),
                    ]
                    for k in ("direct", "relay")
                ],
            },
        ],
        "goals": [
            {
                "goal": "deploy -> first completion <= 1.1x by hand",
                "value": c.fmt_ratio(ratio),
                "met": ratio <= 1.1,
            },
            {
                "goal": "tokens/s through the relay >= 0.95x direct",
                "value": c.fmt_ratio(rate_ratio),
                "met": rate_ratio >= 0.95,
            },
        ],  # fmt: skip
        "notes": [
            f"Ratios of medians: deploy {c.fmt_ratio(med['ours'] / med['raw'])}, tokens/s "
            f"{c.fmt_ratio(rate['relay'] / rate['direct'])}.",
        ],
        "data": {"times": times, "rates": rates, "ratio": ratio, "rate_ratio": rate_ratio},
    }


def run() -> dict[str, Any]:
    """The CPU benchmark with the stand-in (what `make bench` runs)."""
    from zenml_model_deployers.testing.vllm_standin import standin_command

    return run_with(
        name="vllm",
        model=SMOL,
        executable=standin_command(),
        require_gpu=False,
        settings={"max_model_len": 512},
    )


if __name__ == "__main__":
    c.main_for("vllm", run)
