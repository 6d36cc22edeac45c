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


def local_serving_fields(fields: dict[str, object]) -> dict[str, object]:
    """The serving fields of a local deployment's config dump (what its hash covers): no
    provenance, no ``api_key`` when there is none and no ``data_path`` when it is ``"auto"``
    (the default) or ``"relay"`` (the former default), so that the hashes of deployments made
    before those fields existed stay what they were.

    Args:
        fields: the config's JSON dump.

    Returns:
        A new dict.
    """
    out = {k: v for k, v in fields.items() if k not in LOCAL_PROVENANCE_FIELDS}
    if out.get("api_key") is None:
        out.pop("api_key", None)
    # zmd-mlflow's default data path ("auto") and its former default ("relay") are not
    # hashed: deployments made before keep their revision.
    if out.get("data_path") in ("auto", "relay"):
        out.pop("data_path")
    return out
