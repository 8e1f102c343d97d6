"""int8 post-training quantization."""
