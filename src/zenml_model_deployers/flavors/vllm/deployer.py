"""The `zmd-vllm` model deployer."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.flavors.vllm.flavor import VLLMDeployerFlavor
from zenml_model_deployers.flavors.vllm.preflight import check_host
from zenml_model_deployers.flavors.vllm.service import (
    VLLMDeploymentService,
    resolve_local_model,
)


class VLLMDeployer(BaseDeployer):
    """Serves LLMs with `vllm serve` locally, each behind a stable URL that survives updates.

    A deploy returns once the server answers `GET /health` and `GET /v1/models` lists the
    served name; the server runs on after the pipeline ends (a deploy never blocks it).
    """

    NAME: ClassVar[str] = "vLLM (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = VLLMDeployerFlavor
    SERVICE_CLASS: ClassVar[type[VLLMDeploymentService]] = VLLMDeploymentService

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """A model directory (path) or a model object with `save_pretrained` -> a local path.

        A saved object goes to a content-addressed directory under the zmd store, so an
        unchanged model is the same revision (no restart).

        Args:
            model: a `pathlib.Path` / directory string, or e.g. a `transformers` model.
            name: the deployment name.
            input_example: unused.

        Returns:
            The model directory's absolute path.

        Raises:
            ConfigurationError: the object cannot be saved as a model directory.
        """
        if isinstance(model, str | Path):
            return resolve_local_model(str(model))
        save = getattr(model, "save_pretrained", None)
        if not callable(save):
            raise ConfigurationError(
                f"zmd-vllm cannot serve a {type(model).__module__}.{type(model).__name__}.",
                hint="pass a Hub id or a model directory (model='org/model' or a path), or a "
                "model object with `save_pretrained` (e.g. a transformers model).",
            )
        from zenml_model_deployers.local.service import zmd_home

        store = zmd_home() / "models"
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=store) as tmp:
            target = Path(tmp) / "model"
            save(str(target))
            h = hashlib.sha256()
            for path in sorted(p for p in target.rglob("*") if p.is_file()):
                h.update(path.relative_to(target).as_posix().encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
            final = store / f"{name}-{h.hexdigest()[:16]}"
            if not final.exists():
                shutil.move(str(target), str(final))
        return str(final)

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Makes local model and adapter paths absolute and refuses at once where vLLM cannot run.

        Args:
            config: a `VLLMDeploymentConfig`.

        Returns:
            The config to deploy.
        """
        assert isinstance(config, VLLMDeploymentConfig)
        check_host(config.executable, config.require_gpu)
        update: dict[str, Any] = {"model_uri": resolve_local_model(config.model_uri)}
        # Local adapter folders become absolute too (the server runs in another directory).
        update["lora_adapters"] = {
            n: resolve_local_model(p) for n, p in config.lora_adapters.items()
        }
        return config.model_copy(update=update)
