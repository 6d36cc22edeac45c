"""The Inference Endpoints double, driven through the real `huggingface_hub` client.

These are the promises users rely on when they test their own pipelines against it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from zenml_model_deployers.testing.hf_double import HFEndpointsDouble, fake_prediction

TOKEN = "hf_double_test_token"
NS = "me"


@pytest.fixture
def double() -> Iterator[HFEndpointsDouble]:
    with (
        HFEndpointsDouble(
            namespace=NS, orgs=("acme",), token=TOKEN, pending_delay=0.05, init_delay=0.1
        ) as d,
        d.patch_hub(),
    ):
        yield d


def _create(name: str, repository: str = "me/model", **kw: Any) -> Any:
    from huggingface_hub import HfApi

    args: dict[str, Any] = {
        "repository": repository,
        "framework": "pytorch",
        "accelerator": "cpu",
        "instance_size": "x2",
        "instance_type": "intel-icl",
        "region": "us-east-1",
        "vendor": "aws",
        "task": "text-classification",
        "revision": "r1",
        "namespace": NS,
        "token": TOKEN,
    }
    args.update(kw)
    return HfApi().create_inference_endpoint(name, **args)


def _wait(ep: Any, timeout: float = 5.0) -> Any:
    """Like `InferenceEndpoint.wait` (which polls once a second at best), polling fast."""
    deadline = time.monotonic() + timeout
    while ep.fetch().status != "running" or not ep.url:
        if ep.status == "failed" or time.monotonic() > deadline:
            raise AssertionError(f"endpoint {ep.name} is {ep.status}")
        time.sleep(0.05)
    return ep


def test_patch_points_huggingface_hub_at_the_double_and_back() -> None:
    from huggingface_hub import HfApi, constants

    before = (constants.INFERENCE_ENDPOINTS_ENDPOINT, constants.ENDPOINT)
    with HFEndpointsDouble(namespace=NS, token=TOKEN) as d, d.patch_hub():
        assert constants.INFERENCE_ENDPOINTS_ENDPOINT == f"{d.base_url}/v2"
        assert HfApi().whoami(token=TOKEN)["name"] == NS
        assert HfApi().list_inference_endpoints(namespace=NS, token=TOKEN) == []
    assert (constants.INFERENCE_ENDPOINTS_ENDPOINT, constants.ENDPOINT) == before


def test_a_wrong_token_or_namespace_is_refused(double: HFEndpointsDouble) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as e:
        HfApi().list_inference_endpoints(namespace=NS, token="hf_wrong")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:
        HfApi().list_inference_endpoints(namespace="someone-else", token=TOKEN)
    assert e.value.response.status_code == 403
    assert HfApi().list_inference_endpoints(namespace="acme", token=TOKEN) == []


def test_create_goes_pending_initializing_running_and_serves(double: HFEndpointsDouble) -> None:
    from huggingface_hub import InferenceClient

    ep = _create("e1")
    assert ep.status == "pending" and ep.url is None
    _wait(ep)
    assert ep.status == "running" and ep.url
    record = double.endpoint("e1")
    assert record is not None
    assert record.history == ["pending", "initializing", "running"]
    client = InferenceClient(model=ep.url, token=TOKEN)
    out = client.text_classification("hello")
    assert [dict(x) for x in out] == fake_prediction(
        "text-classification", "me/model", "r1", "hello"
    )[0]
    # The serving URL checks the token too (the endpoint is "authenticated").
    assert requests.post(ep.url, json={"inputs": "hello"}, timeout=5).status_code == 401
    # Another revision of the same repository answers differently.
    assert fake_prediction("text-classification", "me/model", "r2", "hello") != fake_prediction(
        "text-classification", "me/model", "r1", "hello"
    )


def test_update_keeps_the_url_and_serves_the_old_revision_until_the_new_one_runs(
    double: HFEndpointsDouble,
) -> None:
    from huggingface_hub import HfApi

    ep = _wait(_create("e2"))
    url = ep.url
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ep = HfApi().update_inference_endpoint("e2", revision="r2", namespace=NS, token=TOKEN)
    assert ep.status == "updating"
    during = requests.post(url, json={"inputs": "x"}, headers=headers, timeout=5)
    assert during.json() == fake_prediction("text-classification", "me/model", "r1", "x")
    _wait(ep)
    assert ep.url == url and ep.revision == "r2"
    after = requests.post(url, json={"inputs": "x"}, headers=headers, timeout=5)
    assert after.json() == fake_prediction("text-classification", "me/model", "r2", "x")


def test_a_failing_repository_fails_with_a_message(double: HFEndpointsDouble) -> None:
    from huggingface_hub.errors import InferenceEndpointError

    ep = _create("e3", repository="me/fail-model")
    with pytest.raises(InferenceEndpointError):
        ep.wait(timeout=5, refresh_every=1)
    assert ep.status == "failed"
    assert "me/fail-model" in ep.raw["status"]["message"]


def test_pause_resume_scale_to_zero_and_delete(double: HFEndpointsDouble) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    ep = _wait(_create("e4"))
    url, headers = ep.url, {"Authorization": f"Bearer {TOKEN}"}
    assert api.pause_inference_endpoint("e4", namespace=NS, token=TOKEN).status == "paused"
    assert requests.get(f"{url}/health", headers=headers, timeout=5).status_code == 503
    _wait(api.resume_inference_endpoint("e4", namespace=NS, token=TOKEN))
    assert requests.get(f"{url}/health", headers=headers, timeout=5).status_code == 200
    # Scaled to zero: the first request gets a 503 and wakes it up; it then serves again.
    assert api.scale_to_zero_inference_endpoint("e4", namespace=NS, token=TOKEN).status == (
        "scaledToZero"
    )
    assert requests.post(url, json={"inputs": "x"}, headers=headers, timeout=5).status_code == 503
    _wait(api.get_inference_endpoint("e4", namespace=NS, token=TOKEN))
    served = requests.post(url, json={"inputs": "x"}, headers=headers, timeout=5)
    assert served.status_code == 200
    api.delete_inference_endpoint("e4", namespace=NS, token=TOKEN)
    assert double.names() == [] and not double.owns(url)
    # Its URL no longer answers as the endpoint. (Another test's server may bind the freed port
    # at once: CI saw one answer there, so any answer must not be this endpoint's.)
    try:
        gone = requests.post(url, json={"inputs": "x"}, headers=headers, timeout=3)
    except requests.RequestException:
        return
    assert gone.status_code != 200 or gone.content != served.content


def test_idle_endpoints_scale_to_zero_by_themselves() -> None:
    with (
        HFEndpointsDouble(
            namespace=NS, token=TOKEN, pending_delay=0.05, init_delay=0.05, scale_to_zero_unit=0.1
        ) as d,
        d.patch_hub(),
    ):
        _wait(_create("idle", min_replica=0, scale_to_zero_timeout=2))
        time.sleep(0.4)  # 2 "minutes" of 0.1 s each, and some
        record = d.endpoint("idle")
        assert record is not None and record.state == "scaledToZero"


def test_offline_mode_reaches_only_the_double(
    double: HFEndpointsDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert HfApi().list_inference_endpoints(namespace=NS, token=TOKEN) == []
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint="https://huggingface.co").whoami(token=TOKEN)
