"""Daemon configuration: a YAML file, with every setting overridable by a `ROLLBACKD_*` variable.

`rollbackd run --config FILE` validates everything before anything starts; a wrong setting is one
line on stderr and exit 2. Environment variables use the upper-case field name, e.g.
ROLLBACKD_PROJECT, ROLLBACKD_LOCATIONS=us-central1,europe-west1, ROLLBACKD_DRY_RUN=true.
"""
from __future__ import annotations

import os
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "ROLLBACKD_"


class SettingsError(Exception):
    """One line a person can act on."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(description="Google Cloud project that holds the managed services.")
    locations: tuple[str, ...] = Field(description="Cloud Run regions to manage, e.g. [us-central1].")
    subscription: str = Field(description="Pub/Sub subscription for deploy, metric, alert and command events.")
    events_topic: str = Field("rollbackd-events", description="Topic the subscription reads (used by `ctl`).")
    notify_topic: str = Field("", description="Topic for decision notifications ('' = log only).")
    policy: str = Field("", description="Policy file ('' = the bundled runbook policy).")
    managed_label: str = Field("rollbackd=enabled", description="Label selecting managed services (the "
                               "policy's `managed` selectors add more; KEY=disabled opts a service out).")
    principal: str = Field(description="The service account rollbackd acts as; its own audit entries are ignored.")
    metrics_mode: Literal["monitoring", "pubsub", "both"] = "monitoring"
    dry_run: bool = False
    kill_switch: bool = Field(False, description="Start with all actions stopped (decisions still logged).")
    http_port: int = Field(8080, ge=0, le=65535)
    journal: str = Field("/var/lib/rollbackd/journal.jsonl", description="Local journal file (rotated).")
    journal_max_mb: int = Field(64, ge=1)
    tick_interval: int = Field(60, ge=5, le=600, description="Seconds between evaluations.")
    monitoring_settle: int = Field(240, ge=0, le=900, description="Seconds before a minute counts as complete.")
    # Testing and private endpoints only: plain-text gRPC addresses (host:port) of Cloud Run,
    # Monitoring and Logging servers. Empty = the real Google APIs with default credentials.
    run_endpoint: str = ""
    monitoring_endpoint: str = ""
    logging_endpoint: str = ""

    @field_validator("project", "subscription", "principal")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("locations")
    @classmethod
    def _some_locations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one location")
        return value

    @field_validator("managed_label")
    @classmethod
    def _label_pair(cls, value: str) -> str:
        key, sep, label_value = value.partition("=")
        if not sep or not key or not label_value:
            raise ValueError("must look like key=value, e.g. rollbackd=enabled")
        if label_value == "disabled":  # policies.managed: KEY=disabled is the opt-out label
            raise ValueError(f"'{key}=disabled' is the opt-out label; use a value such as {key}=enabled")
        return value

    @property
    def label(self) -> tuple[str, str]:
        key, _, value = self.managed_label.partition("=")
        return key, value

    @property
    def subscription_path(self) -> str:
        return self.subscription if "/" in self.subscription else \
            f"projects/{self.project}/subscriptions/{self.subscription}"

    @property
    def notify_topic_path(self) -> str:
        if not self.notify_topic:
            return ""
        return self.notify_topic if "/" in self.notify_topic else f"projects/{self.project}/topics/{self.notify_topic}"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name == "locations":
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[name] = raw
    return values


def load_settings(path: str | None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """File, then environment, then command-line overrides. Raises SettingsError (one line)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            with open(path, encoding="utf-8") as handle:
                loaded = YAML(typ="safe").load(handle)
        except OSError as error:
            raise SettingsError(f"{path}: cannot read config: {error.strerror or error}")
        except YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise SettingsError(f"{path}{where}: not valid YAML: {getattr(error, 'problem', None) or error}")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the config must be a mapping of settings")
        data.update(loaded)
    data.update(_from_env(env))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        source = f"{path}: " if path else ""
        hint = f" (or ${ENV_PREFIX}{str(first['loc'][0]).upper()})" if first["loc"] else ""
        message = "unknown setting" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise SettingsError(f"{source}{field}{hint}: {message}{more}")
