"""The specification's ``tools.lib`` helpers, re-exporting rayvault.learning."""
