"""llm-loadgen: open-loop load generator and end-to-end benchmark for LLM inference services."""

__version__ = "0.1.0"
