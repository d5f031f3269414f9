"""rayvault: closed-loop learning for LLM-agent pipelines."""

__version__ = "0.1.0"
