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
