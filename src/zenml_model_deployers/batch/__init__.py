"""Batch inference at scale: Parquet in chunks, Parquet/SQL out, exactly once per chunk.

``run_batch`` is the job; ``batch_inference_step`` (``zenml_model_deployers.steps``) runs it
in a pipeline. pyarrow, pandas and Ray are imported only when a job runs.
"""

from zenml_model_deployers.batch.predictors import RetryPolicy, is_transient
from zenml_model_deployers.batch.runner import BatchJobReport, run_batch
from zenml_model_deployers.batch.sinks import CommitRecord, JobManifest

__all__ = [
    "BatchJobReport",
    "CommitRecord",
    "JobManifest",
    "RetryPolicy",
    "is_transient",
    "run_batch",
]
