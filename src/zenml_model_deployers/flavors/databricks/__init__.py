"""The `zmd-databricks` flavor: Databricks Model Serving through `databricks-sdk`."""
