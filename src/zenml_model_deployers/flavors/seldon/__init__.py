"""Seldon Core (2 and 1) on Kubernetes: the `zmd-seldon` flavor."""
