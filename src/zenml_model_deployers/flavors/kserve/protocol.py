"""Request and response bodies of the protocols KServe serves: V1 (``{"instances": ...}`` ->
``{"predictions": ...}``), the Open Inference Protocol V2, and the Hugging Face server's
OpenAI chat completions. V2 is shared with Seldon (:mod:`zenml_model_deployers.kube.v2protocol`).

numpy is imported inside the functions (it comes with scikit-learn, the flavor's extra).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.kube.v2protocol import decode_v2, encode_v2


def encode_v1(data: Any) -> dict[str, Any]:
    """A V1 request: ``{"instances": rows}``.

    Args:
        data: a DataFrame, ndarray, list of rows (a 1-D input is one row), or a ready request.

    Returns:
        The request.
    """
    import numpy as np

    if isinstance(data, dict) and ("instances" in data or "inputs" in data):
        return data
    values = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    return {"instances": values.tolist()}


def encode_chat(data: Any) -> dict[str, Any]:
    """An OpenAI chat completion request.

    Args:
        data: a prompt string, a list of ``{"role", "content"}`` messages, or a request dict.

    Returns:
        The request.

    Raises:
        ValueError: none of these.
    """
    if isinstance(data, str):
        return {"messages": [{"role": "user", "content": data}]}
    if isinstance(data, list) and all(isinstance(m, dict) for m in data):
        return {"messages": data}
    if isinstance(data, dict) and "messages" in data:
        return dict(data)
    raise ValueError(
        f"cannot send a {type(data).__name__} to an LLM: pass a prompt string, chat messages "
        "([{'role': 'user', 'content': '...'}]) or an OpenAI chat request dict"
    )


def encode(data: Any, protocol: str) -> dict[str, Any]:
    """A request body in a protocol.

    Args:
        data: the input.
        protocol: ``v1``, ``v2`` or ``openai``.

    Returns:
        The body.
    """
    if protocol == "openai":
        return encode_chat(data)
    if protocol == "v2":
        return encode_v2(data)
    return encode_v1(data)


def decode(body: Any, protocol: str) -> Any:
    """The predictions of a response.

    Args:
        body: the parsed JSON.
        protocol: ``v1``, ``v2`` or ``openai``.

    Returns:
        V1/V2: a list (one entry per row for a single-column output); OpenAI: the first
        choice's text. KServe's V1 servers send the model's own output (``[0, 1, 2]`` for a
        classifier, rows for ``predict_proba``; ``[[x], ...]`` for an ``(n, 1)`` output, which
        comes back flat); V2 one output of shape ``[n]`` (KServe's servers) or ``[n, 1]``
        (MLServer): both come back flat.

    Raises:
        ValueError: an answer in no known shape.
    """
    if protocol == "openai":
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"not an OpenAI completion: {str(body)[:300]}") from e
        return text or ""
    if isinstance(body, dict) and "predictions" in body:
        values = body["predictions"]
        if values and all(isinstance(v, list) and len(v) == 1 for v in values):
            return [v[0] for v in values]
        return values
    if isinstance(body, dict) and "outputs" in body:
        return decode_v2(body)
    raise ValueError(f"neither a V1 nor a V2 answer: {str(body)[:300]}")
