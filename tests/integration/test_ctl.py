"""`rollbackd ctl`: a command is the `rollbackd.dev/command` annotation, written on the service with
the caller's own credentials through the real run_v2 client (to the gRPC Cloud Run fake, which
identifies the caller from its bearer token); the traffic and the other annotations stay as they
were; every mistake is one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import VirtualClock
from daemon.core.command_annotation import COMMAND_ANNOTATION, decode
from daemon.core.intake_fields import Window
from daemon.ctl import ctl_main, register
from tests.fakes.cloud_run import CloudRunFake

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ALICE = "alice@example.com"


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ctl_main(argv, out, err, env=env, clock=VirtualClock(NOW))
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("rollbackd: ctl: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture
def fake(cloud_run_fake: CloudRunFake) -> CloudRunFake:
    cloud_run_fake.add_service("checkout", "my-project", "us-central1", revisions=["checkout-00001-aaa"],
                               labels={"rollbackd": "enabled"}, annotations={"team": "payments"})
    cloud_run_fake.tokens = {"token-alice": ALICE}
    return cloud_run_fake


def env_for(fake: CloudRunFake, token: str = "token-alice") -> dict[str, str]:
    return {"ROLLBACKD_RUN_ENDPOINT": fake.address, "ROLLBACKD_ACCESS_TOKEN": token,
            "ROLLBACKD_PROJECT": "my-project", "PATH": ""}


def test_ctl_writes_the_command_annotation_as_the_caller(fake: CloudRunFake) -> None:
    entries: list[dict[str, Any]] = []
    fake.audit_sink = entries.append
    before = fake.traffic_of("checkout")
    code, out, err = run(["pause", "checkout", "--region", "us-central1", "--reason", "INC-1"], env_for(fake))
    assert code == 0, err
    assert "wrote pause on projects/my-project/locations/us-central1/services/checkout" in out
    annotations = fake.annotations_of("checkout")
    command = decode(annotations[COMMAND_ANNOTATION], Window(NOW))
    assert (command.action, command.reason, command.issued) == ("pause", "INC-1", NOW)
    assert annotations["team"] == "payments", "a foreign annotation was lost"
    assert fake.traffic_of("checkout") == before
    assert ("UpdateService", ALICE) in fake.callers
    update = fake.requests.of("UpdateService")[-1]
    assert list(update.update_mask.paths) == ["annotations"] and update.service.etag
    # The audit entry the sink would publish names alice, from her credentials, not from any text.
    entry = entries[-1]
    assert entry["protoPayload"]["authenticationInfo"]["principalEmail"] == ALICE
    assert json.loads(entry["protoPayload"]["request"]["service"]["annotations"][COMMAND_ANNOTATION])["id"] == \
        command.command_id


def test_a_conflicting_write_is_read_again_and_retried(fake: CloudRunFake) -> None:
    fake.faults.inject("UpdateService", "ABORTED")
    code, _, err = run(["resume", "checkout", "--region", "us-central1", "--reason", "x"], env_for(fake))
    assert code == 0, err
    assert COMMAND_ANNOTATION in fake.annotations_of("checkout")


def test_refusals_from_google_are_one_line(fake: CloudRunFake) -> None:
    code, _, err = run(["pause", "checkout", "--region", "us-central1", "--reason", "x"], env_for(fake, "stolen"))
    assert code == 2 and "did not accept your credentials" in one_line_error(err)
    fake.faults.inject("UpdateService", "PERMISSION_DENIED")
    code, _, err = run(["pause", "checkout", "--region", "us-central1", "--reason", "x"], env_for(fake))
    assert code == 2 and "you need run.services.update" in one_line_error(err)
    code, _, err = run(["pause", "nowhere", "--region", "us-central1", "--reason", "x"], env_for(fake))
    assert code == 2 and "does not exist" in one_line_error(err)
    assert COMMAND_ANNOTATION not in fake.annotations_of("checkout")


def test_region_and_project_from_the_config_file(fake: CloudRunFake, tmp_path: Path) -> None:
    config = tmp_path / "rollbackd.yaml"
    config.write_text(f"project: my-project\nlocations: [us-central1]\nrun_endpoint: '{fake.address}'\n")
    code, _, err = run(["abort", "checkout", "--reason", "x", "--config", str(config)],
                       {"ROLLBACKD_ACCESS_TOKEN": "token-alice", "PATH": ""})
    assert code == 0, err
    assert json.loads(fake.annotations_of("checkout")[COMMAND_ANNOTATION])["action"] == "abort"


@pytest.mark.parametrize("argv,expected", [
    (["pause", "checkout", "--reason", "  "], "--reason must not be empty"),
    (["pause", "checkout", "--reason", "x" * 1001], "at most 1000"),
    (["explode", "checkout", "--reason", "x"], "invalid choice"),
    (["kill-switch-on", "*", "--reason", "x"], "name a service"),
    (["pause", "Checkout_Service", "--reason", "x"], "not a Cloud Run service name"),
    (["pause", "checkout", "--reason", "x", "--project", "X"], "not a Google Cloud project id"),
    (["pause", "checkout", "--reason", "x", "--region", "moon"], "not a Cloud Run region"),
    (["pause", "checkout", "--reason", "x", "--by", "alice@example.com"], "unrecognized arguments: --by"),
    (["pause", "checkout", "--reason", "x", "--timeout", "soon"], "invalid float value"),
])
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], expected: str) -> None:
    if "--region" not in argv:
        argv = argv + ["--region", "us-central1"]
    code, out, err = run(argv, {"ROLLBACKD_PROJECT": "my-project", "PATH": ""})
    assert code == 2 and out == ""
    assert expected in one_line_error(err)


def test_no_project_and_no_region_say_what_to_do() -> None:
    code, _, err = run(["pause", "checkout", "--reason", "x", "--region", "us-central1"], {"PATH": ""})
    assert code == 2 and "no project" in one_line_error(err)
    code, _, err = run(["pause", "checkout", "--reason", "x"], {"ROLLBACKD_PROJECT": "my-project", "PATH": ""})
    assert code == 2 and "pass --region" in one_line_error(err)


def test_bad_config_files(tmp_path: Path) -> None:
    env = {"PATH": ""}
    base = ["pause", "checkout", "--reason", "x", "--region", "us-central1", "--config"]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("project: p\nlocations: [unclosed\n")
    code, _, err = run(base + [str(bad_yaml)], env)
    assert code == 2 and f"{bad_yaml}:" in one_line_error(err) and "not valid YAML" in err
    listy = tmp_path / "list.yaml"
    listy.write_text("- project\n")
    assert "expected a mapping" in one_line_error(run(base + [str(listy)], env)[2])
    numeric = tmp_path / "num.yaml"
    numeric.write_text("project: 12345\n")
    assert "project: expected a string" in one_line_error(run(base + [str(numeric)], env)[2])
    assert "cannot read config" in one_line_error(run(base + [str(tmp_path / "missing.yaml")], env)[2])


def test_unreachable_cloud_run_is_one_line() -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {"ROLLBACKD_RUN_ENDPOINT": dead, "ROLLBACKD_PROJECT": "my-project", "PATH": ""}
    code, out, err = run(["pause", "checkout", "--region", "us-central1", "--reason", "x", "--timeout", "1"], env)
    assert code == 2 and out == "" and "writing the command on" in one_line_error(err)


def test_register_adds_ctl_to_a_cli() -> None:
    parser = argparse.ArgumentParser(prog="rollbackd")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ctl", "kill-switch-off", "checkout", "--reason", "over", "--region", "us-central1"])
    assert args.command == "ctl" and args.action == "kill-switch-off" and args.service == "checkout"
    assert callable(args.handler)


def test_registering_ctl_imports_no_google_client() -> None:
    # `rollbackd --help` must stay fast: the Cloud Run client is imported only when writing.
    import subprocess
    import sys
    code = ("import argparse, sys; from daemon.ctl import register; "
            "register(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in sys.modules if m.startswith(('google.cloud', 'grpc'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"
