"""The request format of Hugging Face Inference Endpoints: which ``InferenceClient`` call a
task takes, which inputs make a batch, the raw ``{"inputs": ...}`` body, and plain outputs.

Pure (no huggingface_hub): ``backend.predict`` and ``format_request`` share it.
"""

from __future__ import annotations

import json
from typing import Any

# Client calls per task; the others get a plain JSON POST of {"inputs": ...}.
TASK_METHODS = {
    "text-classification": "text_classification",
    "sentiment-analysis": "text_classification",
    "text-generation": "text_generation",
    "feature-extraction": "feature_extraction",
    "sentence-embeddings": "feature_extraction",
    "token-classification": "token_classification",
    "fill-mask": "fill_mask",
    "summarization": "summarization",
    "translation": "translation",
    "question-answering": "question_answering",
    "zero-shot-classification": "zero_shot_classification",
    "sentence-similarity": "sentence_similarity",
    "table-question-answering": "table_question_answering",
    "image-classification": "image_classification",
    "object-detection": "object_detection",
    "automatic-speech-recognition": "automatic_speech_recognition",
    "text-to-image": "text_to_image",
}
# Tasks whose input is several named arguments: a dict input is passed as keywords.
KEYWORD_TASKS = {
    "question_answering",
    "zero_shot_classification",
    "sentence_similarity",
    "table_question_answering",
}


def to_plain(value: Any) -> Any:
    """Turns client outputs (dataclass-dicts, numpy arrays) into plain Python data.

    Args:
        value: what a client call returned.

    Returns:
        Lists, dicts, strings and numbers (bytes and images pass through).
    """
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def batch_items(data: Any) -> tuple[list[Any], bool]:
    """The inputs of a call: a list (or array, or DataFrame) is a batch, one answer per item.

    Args:
        data: one input or a batch (a one-column DataFrame gives its values, another one
            its records).

    Returns:
        (inputs, whether it is a batch).
    """
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        if len(data.columns) == 1:
            return list(data.iloc[:, 0]), True
        return list(data.to_dict(orient="records")), True
    if hasattr(data, "tolist") and not isinstance(data, bytes | str):
        data = data.tolist()
    if isinstance(data, list | tuple):
        return list(data), True
    return [data], False


def request_body(data: Any) -> bytes:
    """The raw body Inference Endpoints expects: ``{"inputs": data}``.

    Args:
        data: the inputs (an array is sent as a list).

    Returns:
        JSON bytes.
    """
    if hasattr(data, "tolist"):
        data = data.tolist()
    return json.dumps({"inputs": data}).encode()
