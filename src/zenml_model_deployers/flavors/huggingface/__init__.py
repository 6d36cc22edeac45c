"""flavors/huggingface: Hugging Face Inference Endpoints (`zmd-huggingface`)."""
