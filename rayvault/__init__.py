"""rayvault: closed-loop learning for LLM-agent pipelines."""

#: The package version: its one source (pyproject.toml reads it as ``dynamic``).
__version__ = "0.1.0"
