"""The `zmd-kserve` flavor: KServe `InferenceService`s on Kubernetes."""
