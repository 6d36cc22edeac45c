"""BentoMaterializer: a bento travels with the run as a `.bento` archive (its models inside).

Loading takes the bento from the local store when it is there, else imports the archive, so
another machine (or a store that was cleaned) can serve exactly what the run built.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, ClassVar

import bentoml
from bentoml.exceptions import NotFound
from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType

ARCHIVE = "bento.bento"
INFO = "bento.json"


class BentoMaterializer(BaseMaterializer):
    """Saves a `bentoml.Bento` as its exported archive plus its tag."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (bentoml.Bento,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> bentoml.Bento:
        """The bento from the local store, imported from the archive if missing.

        Args:
            data_type: bentoml.Bento.

        Returns:
            The bento.
        """
        with fileio.open(os.path.join(self.uri, INFO), "r") as f:
            tag = json.loads(f.read())["tag"]
        try:
            return bentoml.bentos.get(tag)
        except NotFound:
            pass
        with tempfile.TemporaryDirectory(prefix="zmd-bento-") as tmp:
            local = os.path.join(tmp, ARCHIVE)
            fileio.copy(os.path.join(self.uri, ARCHIVE), local)
            return bentoml.bentos.import_bento(local)

    def save(self, data: bentoml.Bento) -> None:
        """Exports the bento (with its models) into the artifact store.

        Args:
            data: the bento.
        """
        with tempfile.TemporaryDirectory(prefix="zmd-bento-") as tmp:
            local = data.export(os.path.join(tmp, ARCHIVE))
            fileio.copy(local, os.path.join(self.uri, ARCHIVE), overwrite=True)
        with fileio.open(os.path.join(self.uri, INFO), "w") as f:
            f.write(json.dumps({"tag": str(data.tag)}))

    def extract_metadata(self, data: bentoml.Bento) -> dict[str, MetadataType]:
        """Tag, APIs and models of the bento.

        Args:
            data: the bento.

        Returns:
            Metadata.
        """
        info = data.info
        routes = [r.get("route", "") for r in (info.schema or {}).get("routes", [])]
        models = sorted({str(m.tag) for s in info.services for m in s.models})
        return {
            "bento_tag": str(data.tag),
            "bentoml_version": str(info.bentoml_version),
            "apis": ", ".join(routes),
            "models": ", ".join(models),
        }
