"""The config fields that say where a deployment's config came from, not how it serves.

They are excluded from the config hash (a revision's identity) and from the serving settings
`zmd models describe` shows. A module of its own, without imports, so that the CLI's fast
paths (which must not import ZenML) and ``DeploymentConfig`` share the one list.
"""

PROVENANCE_FIELDS: frozenset[str] = frozenset(
    {
        "type",
        "name",
        "description",
        "pipeline_name",
        "pipeline_step_name",
        "model_name",
        "model_version",
        "service_name",
        "pipeline_run_id",
        "run_name",
    }
)

# Local deployments: saying "yes, without a key" is a decision about exposure, not a serving
# setting, so flipping it must not roll out a new revision; nor does where the front serves
# its metrics (taken at the front's next start).
LOCAL_PROVENANCE_FIELDS: frozenset[str] = PROVENANCE_FIELDS | {
    "allow_unauthenticated",
    "metrics_port",
}


# Serving fields added after deployments existed, with the values they had before (their
# defaults): such a field is hashed only where it differs from those, so that a deployment made
# before the field existed keeps its revision. One table for every local flavor, read by the
# config classes and by the CLI's ZenML-free fast paths alike (a flavor's own field of the same
# name is treated the same way). zmd-mlflow's ``data_path``: "auto" is the default, "relay" the
# former one. zmd-vllm's LoRA settings and ``uni_executor``: a vLLM restart takes minutes.
HASHED_ONLY_WHERE_SET: dict[str, tuple[object, ...]] = {
    "api_key": (None,),
    "data_path": ("auto", "relay"),
    "uni_executor": (False,),
    "lora_adapters": ({},),
    "enable_lora": (None,),
    "max_lora_rank": (None,),
    "max_loras": (None,),
}


def local_serving_fields(fields: dict[str, object]) -> dict[str, object]:
    """The serving fields of a local deployment's config dump (what its hash covers): no
    provenance, and none of ``HASHED_ONLY_WHERE_SET`` at a value it had before it existed.

    Args:
        fields: the config's JSON dump.

    Returns:
        A new dict.
    """
    return {
        k: v
        for k, v in fields.items()
        if k not in LOCAL_PROVENANCE_FIELDS and v not in HASHED_ONLY_WHERE_SET.get(k, ())
    }
