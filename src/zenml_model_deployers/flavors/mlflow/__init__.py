"""flavors/mlflow."""
