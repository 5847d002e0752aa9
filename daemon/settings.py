"""Daemon configuration: a YAML file, with every setting overridable by a `ROLLBACKD_*` variable.

`rollbackd run --config FILE` validates everything before anything starts; a wrong setting is one
line on stderr and exit 2. Environment variables use the upper-case field name, e.g.
ROLLBACKD_PROJECT, ROLLBACKD_LOCATIONS=us-central1,europe-west1, ROLLBACKD_DRY_RUN=true.
"""
from __future__ import annotations

import os
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

ENV_PREFIX = "ROLLBACKD_"
OLD_SUBSCRIPTION_HELP = (
    "'{old}' is no longer a setting: events now arrive on one subscription per source, each on a topic "
    "only that source can publish to. Set audit_subscription (the Logging sink's Cloud Run audit "
    "entries), incidents_subscription (Cloud Monitoring's notification channel) and, for metrics_mode "
    "pubsub, metrics_subscription; commands are written with 'rollbackd ctl' on the service "
    "(see docs/deploy.md)")


class SettingsError(Exception):
    """One line a person can act on."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(description="Google Cloud project that holds the managed services.")
    locations: tuple[str, ...] = Field(description="Cloud Run regions to manage, e.g. [us-central1].")
    # One subscription per source, each on a topic only that source may publish to (docs/deploy.md).
    audit_subscription: str = Field(description="Subscription on the Logging sink's topic: Cloud Run Admin "
                                    "Activity audit entries (deploys, traffic changes, commands).")
    incidents_subscription: str = Field("", description="Subscription on Cloud Monitoring's notification "
                                        "topic (incident schema 1.2); '' = no incidents.")
    metrics_subscription: str = Field("", description="Subscription for native metrics events (metrics_mode "
                                      "pubsub or both); '' = off.")
    notify_topic: str = Field("", description="Topic for decision notifications ('' = log only).")
    policy: str = Field("", description="Policy file ('' = the bundled runbook policy).")
    managed_label: str = Field("rollbackd=enabled", description="Label selecting managed services (the "
                               "policy's `managed` selectors add more; KEY=disabled opts a service out).")
    principal: str = Field(description="The service account rollbackd acts as; its own audit entries are ignored.")
    metrics_mode: Literal["monitoring", "pubsub", "both"] = "monitoring"
    log_view: str = Field("", description="Logging view error capture reads (projects/P/locations/global/"
                          "buckets/_Default/views/V, docs/deploy.md); '' = the project's logs.")
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

    @model_validator(mode="before")
    @classmethod
    def _old_single_subscription(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("subscription" in data or "events_topic" in data):
            old = "subscription" if "subscription" in data else "events_topic"
            raise PydanticCustomError("old_setting", OLD_SUBSCRIPTION_HELP.format(old=old))
        return data

    @model_validator(mode="after")
    def _metrics_source(self) -> "Settings":
        if self.metrics_mode in ("pubsub", "both") and not self.metrics_subscription:
            raise ValueError(f"metrics_mode {self.metrics_mode} needs metrics_subscription")
        return self

    @field_validator("project", "audit_subscription", "principal")
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

    def subscription_path(self, name: str) -> str:
        """A subscription setting's full path ('' stays '')."""
        if not name:
            return ""
        return name if "/" in name else f"projects/{self.project}/subscriptions/{name}"

    @property
    def subscriptions(self) -> dict[str, str]:
        """Source ("audit", "incidents", "metrics") → full subscription path, for the sources in use."""
        paths = {"audit": self.subscription_path(self.audit_subscription),
                 "incidents": self.subscription_path(self.incidents_subscription),
                 "metrics": self.subscription_path(self.metrics_subscription)}
        return {source: path for source, path in paths.items() if path}

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
    for old in ("subscription", "events_topic"):
        if ENV_PREFIX + old.upper() in env:
            raise SettingsError(f"${ENV_PREFIX}{old.upper()}: " + OLD_SUBSCRIPTION_HELP.format(old=old))
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
