"""What a host needs before `vllm serve` can start: the executable, and a visible GPU.

Both are checked before anything starts, so a deploy on a host without them fails at once
(instead of after a long model download) with an error that says which one is missing and how
to get it. Nothing here imports vLLM or CUDA libraries.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local import process as proc

INSTALL_HINT = (
    "install vLLM on a GPU host (`pip install vllm`, a CUDA build; see "
    "https://docs.vllm.ai/en/latest/getting_started/installation/), or set `executable=` "
    "to a command that speaks `vllm serve`'s CLI"
)


def command_prefix(executable: str) -> list[str]:
    """Splits the configured executable (a command, possibly with arguments) into argv.

    Args:
        executable: e.g. "vllm" or "/opt/venv/bin/python -m vllm.entrypoints.cli.main".

    Returns:
        The argv prefix that precedes `serve`.

    Raises:
        ConfigurationError: the command is empty.
    """
    argv = shlex.split(executable)
    if not argv:
        raise ConfigurationError("The vLLM executable is empty.", hint=INSTALL_HINT)
    return argv


def find_executable(executable: str) -> str | None:
    """Where the configured command's program is, on the PATH the server will get.

    Args:
        executable: the configured command.

    Returns:
        Its absolute path, or None if it cannot be run.
    """
    program = command_prefix(executable)[0]
    path = proc.env_with_venv_path().get("PATH", "")
    return shutil.which(program, path=path)


def visible_gpus() -> list[str]:
    """The GPUs this process could use, from device files (no CUDA library is loaded).

    ``CUDA_VISIBLE_DEVICES`` set to nothing (or ``-1``) hides every NVIDIA GPU, as for CUDA.

    Returns:
        Device names (NVIDIA ``/dev/nvidiaN``, AMD ROCm ``/dev/kfd``); empty when none.
    """
    found: list[str] = []
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is None or cuda.strip() not in ("", "-1"):
        found += sorted(p for p in glob.glob("/dev/nvidia[0-9]*") if p[11:].isdigit())
    if os.path.exists("/dev/kfd") and os.environ.get("HIP_VISIBLE_DEVICES", "x").strip() != "":
        found.append("/dev/kfd")
    return found


def check_host(executable: str, require_gpu: bool) -> None:
    """Refuses to start when the executable is missing or no GPU is visible.

    Args:
        executable: the configured command.
        require_gpu: whether a GPU must be visible (False for CPU builds and the stand-in).

    Raises:
        ConfigurationError: with which one is missing and how to fix it.
    """
    program = command_prefix(executable)[0]
    if find_executable(executable) is None:
        raise ConfigurationError(
            f"The vLLM executable '{program}' was not found (not on PATH, nor in this "
            "environment's bin directory): vLLM is not installed here.",
            hint=INSTALL_HINT + ". The `vllm` extra of zenml-model-deployers installs only the "
            "client side (`openai`).",
        )
    if require_gpu and not visible_gpus():
        cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (
            f"CUDA_VISIBLE_DEVICES={cuda!r} hides every GPU"
            if cuda is not None and cuda.strip() in ("", "-1")
            else "no /dev/nvidia* or /dev/kfd device exists"
        )
        raise ConfigurationError(
            f"No GPU is visible on this host ({why}); `vllm serve` needs one.",
            hint="deploy on a GPU host (NVIDIA driver installed, the GPU passed to the "
            "container), or, for a CPU build of vLLM or a stand-in, set `require_gpu=False`.",
        )
