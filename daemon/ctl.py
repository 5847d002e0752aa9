"""`rollbackd ctl`: tell the running daemons to pause, resume, abort or promote a rollout, or to flip
the global kill switch, by publishing a native `command` event to the events topic.

    rollbackd ctl pause checkout --reason "investigating INC-123"
    rollbackd ctl kill-switch-on '*' --reason "freeze" --by alice@example.com

The event goes through the same subscription as every other event, with ordering key = the service,
so it is ordered after that service's earlier events and every replica sees it exactly like a
deploy or a metric. Whether the command is obeyed is the daemon's decision (the policy's
`commands.authorized_principals`); `ctl` only publishes. `--by` is who asks, from the flag,
ROLLBACKD_PRINCIPAL or the active gcloud account.

Where the topic comes from, first found wins: `--topic`/`--project`, ROLLBACKD_EVENTS_TOPIC /
ROLLBACKD_PROJECT, then the keys `events_topic` and `project` of `--config FILE` (or
ROLLBACKD_CONFIG). A topic may be a full `projects/P/topics/T` path or a short name.

`daemon.cli` hooks `register()` in; `ctl_main()` is the same command for tests and scripts. Google
client libraries are imported only when publishing, so `rollbackd --help` stays fast. Every error
is one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import IO, Any, Callable, Mapping, NoReturn, Sequence

from daemon.clock import SystemClock
from daemon.core.events import COMMAND_ACTIONS
from daemon.core.timefmt import format_rfc3339
from daemon.ports import Clock

EXIT_ERROR = 2
DEFAULT_EVENTS_TOPIC = "rollbackd-events"  # as in daemon.settings
# Cloud Run service names: lower-case letters, digits and hyphens, starting with a letter, < 50 chars.
SERVICE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$")
TOPIC_PATH = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")
PROJECT_ID = re.compile(r"^[a-z][-a-z0-9.:]{3,60}[a-z0-9]$")


class CtlError(Exception):
    """One line for the user; exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports to our `err` stream and raises instead of exiting."""

    out: IO[str] = sys.stdout
    err: IO[str] = sys.stderr

    def error(self, message: str) -> NoReturn:
        raise CtlError(f"ctl: {message} (see 'rollbackd ctl --help')")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if message:
            (self.err if file is sys.stderr else self.out).write(message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=COMMAND_ACTIONS, metavar="ACTION",
                        help=f"one of: {', '.join(COMMAND_ACTIONS)}")
    parser.add_argument("service", metavar="SERVICE", help="the Cloud Run service ('*' for kill-switch-*)")
    parser.add_argument("--reason", required=True, help="why (kept in the decision log and notifications)")
    parser.add_argument("--by", help="who asks (default: $ROLLBACKD_PRINCIPAL or the gcloud account)")
    parser.add_argument("--project", help="project of the events topic (default: $ROLLBACKD_PROJECT or config)")
    parser.add_argument("--topic", help="events topic, name or projects/P/topics/T "
                                        "(default: $ROLLBACKD_EVENTS_TOPIC, config, or rollbackd-events)")
    parser.add_argument("--config", help="daemon config file to read project and events_topic from")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for Pub/Sub to accept the command (default 30)")


def register(subparsers: Any) -> None:
    """Add `ctl` to the `rollbackd` command line (called by daemon.cli)."""
    parser = subparsers.add_parser("ctl", help="pause, resume, abort or promote a rollout; flip the kill switch",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)

    def handler(args: argparse.Namespace) -> int:
        return _run(args, sys.stdout, sys.stderr, os.environ)

    parser.set_defaults(handler=handler)


def ctl_main(argv: Sequence[str], out: IO[str], err: IO[str], *, env: Mapping[str, str],
             clock: Clock | None = None, publisher_factory: Callable[[Mapping[str, str]], Any] | None = None) -> int:
    """`rollbackd ctl ...` without the surrounding CLI. Returns the exit code."""
    parser = _Parser(prog="rollbackd ctl", description=__doc__.split("\n\n")[0])
    parser.out, parser.err = out, err
    add_arguments(parser)
    try:
        args = parser.parse_args(list(argv))
    except CtlError as error:
        err.write(f"rollbackd: {error}\n")
        return EXIT_ERROR
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    return _run(args, out, err, env, clock=clock, publisher_factory=publisher_factory)


def _run(args: argparse.Namespace, out: IO[str], err: IO[str], env: Mapping[str, str], *,
         clock: Clock | None = None, publisher_factory: Callable[[Mapping[str, str]], Any] | None = None) -> int:
    try:
        event = build_command(args.action, args.service, reason=args.reason,
                              by=args.by or principal_from(env), clock=clock or SystemClock())
        topic = resolve_topic(args.topic, args.project, args.config, env)
        message_id = publish_command(event, topic, env, timeout_s=args.timeout,
                                     publisher_factory=publisher_factory)
    except CtlError as error:
        err.write(f"rollbackd: {error}\n")
        return EXIT_ERROR
    out.write(f"published {event['action']} for {event['service']} by {event['by']} "
              f"to {topic} (message {message_id})\n")
    return 0


# --- the pieces ------------------------------------------------------------------------------------
def build_command(action: str, service: str, *, reason: str, by: str, clock: Clock) -> dict[str, Any]:
    """The native command event (the format daemon.core.intake_native parses)."""
    if action not in COMMAND_ACTIONS:
        raise CtlError(f"ctl: unknown action {action!r} (expected one of {', '.join(COMMAND_ACTIONS)})")
    if service == "*":
        if not action.startswith("kill-switch"):
            raise CtlError(f"ctl: '*' (all services) is only for kill-switch-on/off, not {action}")
    elif not SERVICE_NAME.match(service):
        raise CtlError(f"ctl: {service!r} is not a Cloud Run service name "
                       "(lower-case letters, digits and hyphens, starting with a letter)")
    if not reason.strip():
        raise CtlError("ctl: --reason must not be empty: say why, it goes into the decision log")
    if not by.strip():
        raise CtlError("ctl: --by must not be empty")
    return {"type": "command", "time": format_rfc3339(clock.now()), "service": service, "action": action,
            "by": by.strip(), "reason": reason.strip()}


def principal_from(env: Mapping[str, str]) -> str:
    """ROLLBACKD_PRINCIPAL, else the active gcloud account, else a CtlError saying what to do."""
    principal = env.get("ROLLBACKD_PRINCIPAL", "").strip()
    if principal:
        return principal
    gcloud = shutil.which("gcloud", path=env.get("PATH", os.defpath))
    if gcloud:
        try:
            done = subprocess.run([gcloud, "config", "get-value", "account"], capture_output=True, text=True,
                                  timeout=20, env=dict(env), stdin=subprocess.DEVNULL)
            account = done.stdout.strip().splitlines()[-1].strip() if done.stdout.strip() else ""
            if done.returncode == 0 and account and "(unset)" not in account:
                return account
        except (OSError, subprocess.SubprocessError):
            pass
    raise CtlError("ctl: who is asking? pass --by PRINCIPAL, set ROLLBACKD_PRINCIPAL, "
                   "or log in with 'gcloud auth login'")


def resolve_topic(topic: str | None, project: str | None, config: str | None, env: Mapping[str, str]) -> str:
    """The full topic path, from flags, then environment, then the config file."""
    topic = topic or env.get("ROLLBACKD_EVENTS_TOPIC") or None
    project = project or env.get("ROLLBACKD_PROJECT") or None
    config = config or env.get("ROLLBACKD_CONFIG") or None
    if config and (topic is None or (project is None and "/" not in topic)):
        keys = read_config_keys(config)
        topic = topic or keys.get("events_topic")
        project = project or keys.get("project")
    topic = topic or DEFAULT_EVENTS_TOPIC
    if "/" in topic:
        if not TOPIC_PATH.match(topic):
            raise CtlError(f"ctl: topic {topic!r} is neither a name nor projects/PROJECT/topics/TOPIC")
        return topic
    if not project:
        raise CtlError("ctl: no project: pass --project, set ROLLBACKD_PROJECT, or give --config with 'project'")
    if not PROJECT_ID.match(project):
        raise CtlError(f"ctl: {project!r} is not a Google Cloud project id")
    return f"projects/{project}/topics/{topic}"


def read_config_keys(path: str) -> dict[str, str]:
    """`project` and `events_topic` from the daemon's YAML config (safe loading; other keys ignored)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as handle:
            data = YAML(typ="safe", pure=True).load(handle)
    except OSError as error:
        raise CtlError(f"ctl: cannot read config {path}: {error.strerror or error}") from None
    except (YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        at = f":{where.line + 1}:{where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CtlError(f"ctl: {path}{at}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CtlError(f"ctl: {path}: expected a mapping of settings, got {type(data).__name__}")
    keys: dict[str, str] = {}
    for key in ("project", "events_topic"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise CtlError(f"ctl: {path}: {key}: expected a non-empty string")
        keys[key] = value.strip()
    return keys


def publish_command(event: dict[str, Any], topic: str, env: Mapping[str, str], *, timeout_s: float,
                    publisher_factory: Callable[[Mapping[str, str]], Any] | None = None) -> str:
    """Publish with ordering key = service and wait for Pub/Sub's ack; errors become CtlError."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    from daemon.adapters.pubsub_source import publish_events
    from daemon.google_errors import code_of

    publisher = None
    try:
        publisher = (publisher_factory or make_publisher)(env)
        return publish_events(publisher, topic, [event], timeout_s=timeout_s)[0]
    except gexc.NotFound:
        raise CtlError(f"ctl: topic {topic} does not exist (check --project/--topic)") from None
    except gexc.PermissionDenied:
        raise CtlError(f"ctl: permission denied publishing to {topic} "
                       "(you need roles/pubsub.publisher on it)") from None
    except auth_exc.DefaultCredentialsError:
        raise CtlError("ctl: no Google credentials: run 'gcloud auth application-default login'") from None
    except TimeoutError:
        raise CtlError(f"ctl: Pub/Sub did not accept the command within {timeout_s:g}s ({topic})") from None
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CtlError(f"ctl: publishing to {topic} failed: {code_of(error)}: {first}") from None
    finally:
        if publisher is not None:
            try:
                publisher.stop()
            except Exception:  # noqa: BLE001 - already published or already failed; nothing to add
                pass


def make_publisher(env: Mapping[str, str]) -> Any:
    """An ordering PublisherClient. PUBSUB_EMULATOR_HOST is taken from `env` (not only os.environ),
    so tests and scripts can point one call at an emulator."""
    from google.cloud import pubsub_v1

    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    host = env.get("PUBSUB_EMULATOR_HOST", "").strip()
    if not host:
        return pubsub_v1.PublisherClient(publisher_options=options)
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    # An explicit transport: the client would otherwise read os.environ, not `env`.
    return pubsub_v1.PublisherClient(publisher_options=options,
                                     transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host)))


__all__ = ["CtlError", "add_arguments", "build_command", "ctl_main", "make_publisher", "principal_from",
           "publish_command", "read_config_keys", "register", "resolve_topic"]
