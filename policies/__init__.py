"""SRE-owned policy files: pydantic models, the YAML loader with line numbers, validation,
JSON Schema, diff, and `default.yaml` (the deployment runbook's tables)."""
