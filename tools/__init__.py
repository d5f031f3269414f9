"""The specification's module paths (``tools.learning_event`` …), re-exporting rayvault.learning."""
