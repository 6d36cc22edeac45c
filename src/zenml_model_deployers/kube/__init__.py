"""The Kubernetes runtime shared by the cluster flavors (Seldon, KServe).

Like ``local/`` for processes: how to reach a cluster (kubeconfig context, in-cluster, ZenML
connector), name, label and annotate what we own, create / merge-patch / read back / delete,
wait for a condition (bounded watch, polling fallback), Kubernetes Secrets from ZenML secrets,
and model objects uploaded to the artifact store. ``kubernetes`` is imported inside functions.
"""
