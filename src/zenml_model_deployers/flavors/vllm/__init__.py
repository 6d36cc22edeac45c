"""zmd-vllm: the `vllm serve` OpenAI-compatible server as a managed local process."""
