"""`rollbackd ctl`: ask the running daemons to pause, resume, abort or promote a rollout, or to flip
the global kill switch, by writing a command annotation on the Cloud Run service itself.

    rollbackd ctl pause checkout --region us-central1 --reason "investigating INC-123"
    rollbackd ctl kill-switch-on checkout --region us-central1 --reason "freeze"

`ctl` reads the service (GetService), adds `rollbackd.dev/command` = {"id", "action", "reason",
"issued"} to its annotations, and writes it back with UpdateService (annotations only, the etag it
read, so a concurrent change is never overwritten: a conflict is read again and retried). No new
revision is made and traffic is untouched. It runs as YOU: the caller's Application Default
Credentials (`gcloud auth application-default login`), or a raw access token in
ROLLBACKD_ACCESS_TOKEN (e.g. `$(gcloud auth print-access-token)`). Google authenticates you and IAM
decides whether you may update that service (`run.services.update`); the Admin Activity audit entry
of the update names you, and that is the only identity the daemon believes (docs/security.md).
The service holds one command at a time: if the one on it has not been handled yet (its id is not in
`rollbackd.dev/commands-handled`) and is recent, `ctl` waits for the daemon (up to `--wait`, wall
time) before replacing it, and says so if it replaces it anyway (the daemon then journals the old one
as "not on the service").
Whether the command is obeyed is the daemon's decision: the policy's `commands.authorized_principals`
(and, for the kill switch, `kill_switch_principals`); the outcome is in its decision log.

The project comes from `--project`, ROLLBACKD_PROJECT, or the `project` key of `--config FILE` (or
ROLLBACKD_CONFIG); the region from `--region`, or the config's `locations` when it names exactly one.
ROLLBACKD_RUN_ENDPOINT or the config's `run_endpoint` (host:port, plain-text gRPC) is for tests and
private endpoints only.

`daemon.cli` hooks `register()` in; `ctl_main()` is the same command for tests and scripts. Google
client libraries are imported only when writing, so `rollbackd --help` stays fast. Every error is
one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from datetime import datetime, timedelta
from typing import IO, Any, Callable, Mapping, NoReturn, Sequence

from daemon.clock import SystemClock
from daemon.core.command_annotation import COMMAND_ANNOTATION, MAX_REASON_CHARS, encode
from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.timefmt import parse_rfc3339
from daemon.core.events import COMMAND_ACTIONS
from daemon.core.redact import redact
from daemon.ports import Clock

EXIT_ERROR = 2
# Cloud Run service names: lower-case letters, digits and hyphens, starting with a letter, < 50 chars.
SERVICE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$")
PROJECT_ID = re.compile(r"^[a-z][-a-z0-9.:]{3,60}[a-z0-9]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
CONFLICT_RETRIES = 3
HANDLED_ANNOTATION = f"{ANNOTATION_PREFIX}commands-handled"
# An unhandled command older than this is past the default commands.max_command_age: not waited for.
PENDING_FOR = timedelta(minutes=15)


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
    parser.add_argument("service", metavar="SERVICE",
                        help="the Cloud Run service (for kill-switch-*: any service rollbackd manages)")
    parser.add_argument("--reason", required=True, help="why (kept in the decision log and notifications)")
    parser.add_argument("--region", help="the service's region, e.g. us-central1 (default: the config's "
                                         "only location)")
    parser.add_argument("--project", help="the service's project (default: $ROLLBACKD_PROJECT or config)")
    parser.add_argument("--config", help="daemon config file to read project, locations and run_endpoint from")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for Cloud Run to accept the command (default 60)")
    parser.add_argument("--wait", type=float, default=20.0, metavar="SECONDS",
                        help="how long to wait for an earlier command on the service to be handled (default 20)")


def register(subparsers: Any) -> None:
    """Add `ctl` to the `rollbackd` command line (called by daemon.cli)."""
    parser = subparsers.add_parser("ctl", help="pause, resume, abort or promote a rollout; flip the kill switch",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)

    def handler(args: argparse.Namespace) -> int:
        return _run(args, sys.stdout, sys.stderr, os.environ)

    parser.set_defaults(handler=handler)


def ctl_main(argv: Sequence[str], out: IO[str], err: IO[str], *, env: Mapping[str, str],
             clock: Clock | None = None, services_factory: Callable[[Mapping[str, str], str], Any] | None = None) -> int:
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
    return _run(args, out, err, env, clock=clock, services_factory=services_factory)


def _run(args: argparse.Namespace, out: IO[str], err: IO[str], env: Mapping[str, str], *,
         clock: Clock | None = None, services_factory: Callable[[Mapping[str, str], str], Any] | None = None) -> int:
    try:
        check_request(args.action, args.service, args.reason)
        project, region, endpoint = resolve_target(args.project, args.region, args.config, env)
        name = f"projects/{project}/locations/{region}/services/{args.service}"
        command_id = str(uuid.uuid4())
        # The annotation is public to anyone who can read the service: no credential goes into it.
        value = encode(command_id, args.action, redact(args.reason.strip()), (clock or SystemClock()).now())
        replaced = write_command(name, value, env, endpoint=endpoint, timeout_s=args.timeout,
                                 services_factory=services_factory, wait_s=args.wait, now=(clock or SystemClock()).now())
    except CtlError as error:
        err.write(f"rollbackd: {error}\n")
        return EXIT_ERROR
    if replaced:
        err.write(f"rollbackd: ctl: warning: replaced command {replaced}, which rollbackd had not handled "
                  f"after {args.wait:g}s (is it running?)\n")
    out.write(f"wrote {args.action} on {name} (command {command_id}); the daemon's decision log says "
              "whether it was obeyed\n")
    return 0


# --- the pieces ------------------------------------------------------------------------------------
def check_request(action: str, service: str, reason: str) -> None:
    if action not in COMMAND_ACTIONS:
        raise CtlError(f"ctl: unknown action {action!r} (expected one of {', '.join(COMMAND_ACTIONS)})")
    if service == "*":
        raise CtlError("ctl: name a service: commands are written on a Cloud Run service (for the kill "
                       "switch, any service rollbackd manages)")
    if not SERVICE_NAME.match(service):
        raise CtlError(f"ctl: {service!r} is not a Cloud Run service name "
                       "(lower-case letters, digits and hyphens, starting with a letter)")
    if not reason.strip():
        raise CtlError("ctl: --reason must not be empty: say why, it goes into the decision log")
    if len(reason.strip()) > MAX_REASON_CHARS:
        raise CtlError(f"ctl: --reason is {len(reason.strip())} characters; at most {MAX_REASON_CHARS}")


def resolve_target(project: str | None, region: str | None, config: str | None,
                   env: Mapping[str, str]) -> tuple[str, str, str]:
    """(project, region, plain-text endpoint or '') from flags, then environment, then the config file."""
    project = project or env.get("ROLLBACKD_PROJECT") or None
    endpoint = env.get("ROLLBACKD_RUN_ENDPOINT", "").strip()
    config = config or env.get("ROLLBACKD_CONFIG") or None
    if config:
        keys = read_config_keys(config)
        project = project or keys.get("project")
        endpoint = endpoint or keys.get("run_endpoint", "")
        locations = keys.get("locations", "")
        if region is None and locations and "," not in locations:
            region = locations
    if not project:
        raise CtlError("ctl: no project: pass --project, set ROLLBACKD_PROJECT, or give --config with 'project'")
    if not PROJECT_ID.match(project):
        raise CtlError(f"ctl: {project!r} is not a Google Cloud project id")
    if not region:
        raise CtlError("ctl: no region: pass --region (the service's Cloud Run region, e.g. us-central1)")
    if not REGION.match(region):
        raise CtlError(f"ctl: {region!r} is not a Cloud Run region such as us-central1")
    return project, region, endpoint


def read_config_keys(path: str) -> dict[str, str]:
    """`project`, `locations` (comma-joined) and `run_endpoint` from the daemon's YAML config."""
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
    for key in ("project", "run_endpoint"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CtlError(f"ctl: {path}: {key}: expected a string")
        keys[key] = value.strip()
    locations = data.get("locations")
    if isinstance(locations, str):
        keys["locations"] = locations.strip()
    elif isinstance(locations, list) and all(isinstance(item, str) for item in locations):
        keys["locations"] = ",".join(item.strip() for item in locations)
    return keys


def pending_command(annotations: Mapping[str, str], now: datetime) -> str:
    """The id of a recent command on the service that rollbackd has not handled yet, or ''."""
    from daemon.core.command_annotation import command_id_on

    command_id = command_id_on(annotations)
    if not command_id or command_id in annotations.get(HANDLED_ANNOTATION, "").split(","):
        return ""
    try:
        issued = parse_rfc3339(json.loads(annotations[COMMAND_ANNOTATION]).get("issued", ""))
    except (ValueError, TypeError, AttributeError):
        return ""
    return command_id if timedelta(0) <= now - issued <= PENDING_FOR else ""


def write_command(name: str, value: str, env: Mapping[str, str], *, endpoint: str, timeout_s: float,
                  services_factory: Callable[[Mapping[str, str], str], Any] | None = None,
                  wait_s: float = 0.0, now: datetime | None = None) -> str:
    """Read the service, add the command annotation, write it back etag-guarded (a conflict is read
    again, a few times); errors become CtlError. Returns the id of an unhandled command it replaced
    after waiting `wait_s` (wall time) for the daemon, or ''."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud import run_v2
    from google.protobuf import field_mask_pb2

    from daemon.google_errors import code_of

    try:
        client, metadata = (services_factory or make_services)(env, endpoint)
        # Wall time: waiting for the daemon is network business, whatever clock stamps the command.
        wall = SystemClock()
        deadline = wall.monotonic() + wait_s
        replaced = ""
        for attempt in range(CONFLICT_RETRIES):
            service = client.get_service(name=name, timeout=timeout_s, metadata=metadata)
            pending = pending_command(service.annotations, now) if now is not None else ""
            while pending and wall.monotonic() < deadline:
                wall.sleep_until(wall.now() + timedelta(seconds=0.5))
                service = client.get_service(name=name, timeout=timeout_s, metadata=metadata)
                pending = pending_command(service.annotations, now) if now is not None else ""
            replaced = pending
            annotations = dict(service.annotations)
            annotations[COMMAND_ANNOTATION] = value
            service.annotations = annotations
            request = run_v2.UpdateServiceRequest(service=service,
                                                  update_mask=field_mask_pb2.FieldMask(paths=["annotations"]))
            try:
                client.update_service(request=request, timeout=timeout_s, metadata=metadata).result(timeout=timeout_s)
                return replaced
            except gexc.Aborted:
                if attempt + 1 == CONFLICT_RETRIES:
                    raise
    except gexc.NotFound:
        raise CtlError(f"ctl: {name} does not exist (check the service, --region and --project)") from None
    except gexc.PermissionDenied:
        raise CtlError(f"ctl: permission denied on {name}: you need run.services.update on the service "
                       "(e.g. roles/run.developer)") from None
    except gexc.Unauthenticated:
        raise CtlError("ctl: Google did not accept your credentials: run 'gcloud auth application-default "
                       "login'") from None
    except gexc.Aborted:
        raise CtlError(f"ctl: {name} kept changing while writing the command; try again") from None
    except auth_exc.DefaultCredentialsError:
        raise CtlError("ctl: no Google credentials: run 'gcloud auth application-default login'") from None
    except CtlError:
        raise
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CtlError(f"ctl: writing the command on {name} failed: {code_of(error)}: {first}") from None
    raise CtlError(f"ctl: {name} kept changing while writing the command; try again")


def make_services(env: Mapping[str, str], endpoint: str) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """A ServicesClient acting as the caller, and the call metadata. With ROLLBACKD_ACCESS_TOKEN the
    token is the credential; otherwise Application Default Credentials. A plain-text `endpoint`
    (tests, private endpoints) gets the token as `authorization` metadata."""
    from google.cloud import run_v2

    token = env.get("ROLLBACKD_ACCESS_TOKEN", "").strip()
    if endpoint:
        import grpc
        from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

        transport = ServicesGrpcTransport(channel=grpc.insecure_channel(endpoint))
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return run_v2.ServicesClient(transport=transport), metadata
    if token:
        from google.oauth2.credentials import Credentials

        return run_v2.ServicesClient(credentials=Credentials(token)), ()
    import google.auth

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return run_v2.ServicesClient(credentials=credentials), ()


__all__ = ["CtlError", "add_arguments", "check_request", "ctl_main", "make_services", "read_config_keys",
           "register", "resolve_target", "write_command"]
