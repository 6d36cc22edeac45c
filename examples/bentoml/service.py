"""The BentoML 1.4 service the example serves: one `classify` API over the trained model."""

from __future__ import annotations

import bentoml
import numpy as np

MODEL_NAME = "iris_clf"


@bentoml.service(traffic={"timeout": 30})
class IrisClassifier:
    """Classifies iris flowers (4 measurements in cm -> class id)."""

    # `bento_builder_step(model_name="iris_clf")` saves the trained model under this name;
    # the bento pins the version that was latest when it was built.
    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def classify(self, input_data: np.ndarray) -> np.ndarray:
        """Class ids for rows of [sepal_length, sepal_width, petal_length, petal_width]."""
        return np.asarray(self.model.predict(input_data))
