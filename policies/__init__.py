"""SRE-owned policy files: pydantic models, the YAML loader with line numbers, validation,
JSON Schema, diff, and `default.yaml` (the deployment runbook's tables).

Kept import-light: the loader (ruamel.yaml, pydantic) is imported only when a policy is loaded.
"""
from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.model import Policy


def default_policy_path() -> Path:
    """The bundled `policies/default.yaml` (package data, so it is there after `pip install`)."""
    resource = files("policies") / "default.yaml"
    with as_file(resource) as path:  # a real file for normal and editable installs
        return Path(path)


def load_default_policy() -> "Policy":
    """The runbook's policy. Raises `policies.loader.PolicyError` only if the bundle is broken."""
    from policies.loader import load_policy

    return load_policy(default_policy_path())
