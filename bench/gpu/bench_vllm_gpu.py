"""zmd-vllm with the real `vllm serve` on a GPU host (not run in CI, not by `make bench`).

The same two measurements as ``bench/bench_vllm.py`` (deploy -> first completion vs the
server started by hand; streamed tokens/s through the relay vs the server's own port), with
vLLM itself and a small model. Needs a GPU, vLLM installed in this environment (or
``--executable``) and the model in the Hugging Face cache or reachable.

    .venv/bin/pip install vllm            # a CUDA build matching the host's driver
    .venv/bin/python bench/gpu/bench_vllm_gpu.py --model Qwen/Qwen2.5-0.5B-Instruct

It prints a markdown table (paste it into docs/flavors/vllm.md) and, with ``--json PATH``,
writes the result. Every process it starts is ended, by pid, and its temporary ZenML store
is removed, also when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_vllm  # noqa: E402
import common as c  # noqa: E402


def main() -> int:
    """Parses the options, runs the measurements, prints the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct")
    p.add_argument("--executable", default="vllm", help="a command that speaks `vllm serve`")
    p.add_argument("--repeats", type=int, default=3, help="deploys per variant")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per deploy")
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.4,
        help="per server (vLLM's default 0.9 leaves no room for a second server in an update)",
    )
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument(
        "--no-gpu",
        action="store_true",
        help="skip the GPU check (a CPU build of vLLM; or a dry run with the stand-in)",
    )
    p.add_argument("--json", help="also write the result as JSON to this path")
    args = p.parse_args()

    root = c.isolated_env("vllm-gpu")
    started = time.monotonic()
    try:
        result = bench_vllm.run_with(
            name="vllm-gpu",
            model=args.model,
            executable=args.executable,
            require_gpu=not args.no_gpu,
            settings={
                "gpu_memory_utilization": args.gpu_memory_utilization,
                "max_model_len": args.max_model_len,
            },
            repeats=args.repeats,
            timeout=args.timeout,
        )
    finally:
        c.end_our_processes(root, timeout=30)
        os.chdir(c.REPO)
        c.remove_root(root)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(c.result_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
