"""`rollbackd ctl`: commands reach the events topic on the real emulator with ordering key = service
and parse back into the Command the core expects; every mistake is one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import io
import itertools
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from daemon.clock import VirtualClock
from daemon.core.events import Command
from daemon.core.intake import parse_message
from daemon.ctl import ctl_main, register

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
_names = itertools.count()


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ctl_main(argv, out, err, env=env, clock=VirtualClock(NOW))
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("rollbackd: ctl: "), err
    assert "Traceback" not in err
    return err


class Topic:
    def __init__(self, emulator: str) -> None:
        from daemon.adapters.pubsub_source import ensure_subscription, make_publisher, make_subscriber

        n = f"{int(time.monotonic() * 1000)}-{next(_names)}"
        self.project = "rollbackd-ctl"
        self.name = f"events-{n}"
        self.path = f"projects/{self.project}/topics/{self.name}"
        self.subscription = f"projects/{self.project}/subscriptions/watch-{n}"
        self.publisher = make_publisher()
        self.subscriber = make_subscriber()
        ensure_subscription(self.publisher, self.subscriber, self.path, self.subscription)
        self.env = {"PUBSUB_EMULATOR_HOST": emulator, "ROLLBACKD_PROJECT": self.project,
                    "ROLLBACKD_EVENTS_TOPIC": self.name, "PATH": ""}

    def receive(self, count: int) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            response = self.subscriber.pull(subscription=self.subscription, max_messages=count, timeout=5)
            got += [m.message for m in response.received_messages]
            if response.received_messages:
                self.subscriber.acknowledge(subscription=self.subscription,
                                            ack_ids=[m.ack_id for m in response.received_messages])
        return got

    def close(self) -> None:
        self.subscriber.delete_subscription(subscription=self.subscription)
        self.publisher.delete_topic(topic=self.path)
        self.subscriber.close()


@pytest.fixture
def topic(pubsub_emulator: str) -> Iterator[Topic]:
    t = Topic(pubsub_emulator)
    try:
        yield t
    finally:
        t.close()


def test_ctl_publishes_a_command_with_the_service_as_ordering_key(topic: Topic) -> None:
    code, out, err = run(["pause", "checkout", "--reason", "investigating INC-7", "--by", "alice@example.com"],
                         topic.env)
    assert (code, err) == (0, "")
    assert "published pause for checkout by alice@example.com" in out and topic.path in out
    [message] = topic.receive(1)
    assert message.ordering_key == "checkout"
    assert message.attributes["type"] == "command"
    parsed = parse_message(message.data, dict(message.attributes), now=NOW)
    assert parsed == [Command(time=NOW, service="checkout", action="pause", by="alice@example.com",
                              reason="investigating INC-7")]


def test_kill_switch_for_all_services_and_principal_from_env(topic: Topic) -> None:
    env = dict(topic.env, ROLLBACKD_PRINCIPAL="oncall@example.com")
    assert run(["kill-switch-on", "*", "--reason", "freeze"], env)[0] == 0
    assert run(["promote", "search", "--reason", "looks good"], env)[0] == 0
    messages = topic.receive(2)
    commands = {m.ordering_key: parse_message(m.data, {}, now=NOW)[0] for m in messages}
    assert set(commands) == {"*", "search"}
    assert commands["*"].action == "kill-switch-on" and commands["*"].by == "oncall@example.com"
    assert commands["search"].action == "promote"


def test_topic_and_project_from_the_config_file(topic: Topic, tmp_path: Path) -> None:
    config = tmp_path / "rollbackd.yaml"
    config.write_text(f"project: {topic.project}\nevents_topic: {topic.name}\nsubscription: whatever\n"
                      "locations: [europe-west1]\n")
    env = {"PUBSUB_EMULATOR_HOST": topic.env["PUBSUB_EMULATOR_HOST"], "PATH": ""}
    code, out, err = run(["resume", "checkout", "--reason", "fixed", "--by", "bob@example.com",
                          "--config", str(config)], env)
    assert (code, err) == (0, "") and topic.path in out
    [message] = topic.receive(1)
    assert parse_message(message.data, {}, now=NOW)[0].action == "resume"
    # Flags win over the config file: a topic that does not exist is reported, not silently replaced.
    code, _, err = run(["resume", "checkout", "--reason", "fixed", "--by", "bob@example.com",
                        "--config", str(config), "--topic", "nope-topic"], env)
    assert code == 2 and "does not exist" in one_line_error(err)


def test_gcloud_account_is_the_default_principal(topic: Topic, tmp_path: Path) -> None:
    fake = tmp_path / "gcloud"
    fake.write_text("#!/bin/sh\n[ \"$*\" = 'config get-value account' ] && echo carol@example.com\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(topic.env, PATH=str(tmp_path))
    assert run(["abort", "checkout", "--reason", "bad"], env)[0] == 0
    [message] = topic.receive(1)
    assert parse_message(message.data, {}, now=NOW)[0].by == "carol@example.com"


@pytest.mark.parametrize("argv, expected", [
    (["pause", "checkout"], "required: --reason"),
    (["pause", "checkout", "--reason", "  "], "--reason must not be empty"),
    (["explode", "checkout", "--reason", "x"], "invalid choice"),
    (["pause", "*", "--reason", "x"], "only for kill-switch"),
    (["pause", "Checkout_Service", "--reason", "x"], "not a Cloud Run service name"),
    (["pause", "checkout", "--reason", "x", "--topic", "projects/p/subs/x"], "neither a name nor"),
    (["pause", "checkout", "--reason", "x", "--project", "X"], "not a Google Cloud project id"),
    (["pause", "checkout", "--reason", "x", "--timeout", "soon"], "invalid float value"),
])
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], expected: str) -> None:
    code, out, err = run(argv + ["--by", "a@example.com"], {"ROLLBACKD_PROJECT": "my-project", "PATH": ""})
    assert code == 2 and out == ""
    assert expected in one_line_error(err)


def test_no_principal_and_no_project_say_what_to_do() -> None:
    code, _, err = run(["pause", "checkout", "--reason", "x"], {"ROLLBACKD_PROJECT": "my-project", "PATH": ""})
    assert code == 2 and "--by PRINCIPAL" in one_line_error(err)
    code, _, err = run(["pause", "checkout", "--reason", "x", "--by", "a@example.com"], {"PATH": ""})
    assert code == 2 and "no project" in one_line_error(err)


def test_bad_config_files(tmp_path: Path) -> None:
    env = {"PATH": ""}
    base = ["pause", "checkout", "--reason", "x", "--by", "a@example.com", "--config"]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("project: p\nevents_topic: [unclosed\n")
    code, _, err = run(base + [str(bad_yaml)], env)
    assert code == 2 and f"{bad_yaml}:" in one_line_error(err) and "not valid YAML" in err
    listy = tmp_path / "list.yaml"
    listy.write_text("- project\n")
    assert "expected a mapping" in one_line_error(run(base + [str(listy)], env)[2])
    numeric = tmp_path / "num.yaml"
    numeric.write_text("project: 12345\n")
    assert "project: expected a non-empty string" in one_line_error(run(base + [str(numeric)], env)[2])
    assert "cannot read config" in one_line_error(run(base + [str(tmp_path / "missing.yaml")], env)[2])


def test_unreachable_pubsub_is_a_clean_timeout() -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {"PUBSUB_EMULATOR_HOST": dead, "ROLLBACKD_PROJECT": "my-project", "PATH": ""}
    code, out, err = run(["pause", "checkout", "--reason", "x", "--by", "a@example.com", "--timeout", "1"], env)
    assert code == 2 and out == "" and "did not accept the command within 1s" in one_line_error(err)


def test_register_adds_ctl_to_a_cli() -> None:
    parser = argparse.ArgumentParser(prog="rollbackd")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ctl", "kill-switch-off", "*", "--reason", "over", "--project", "p-1234"])
    assert args.command == "ctl" and args.action == "kill-switch-off" and args.service == "*"
    assert callable(args.handler)


def test_registering_ctl_imports_no_google_client() -> None:
    # `rollbackd --help` must stay fast: the Pub/Sub client is imported only when publishing.
    import subprocess
    import sys
    code = ("import argparse, sys; from daemon.ctl import register; "
            "register(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in sys.modules if m.startswith(('google.cloud', 'grpc'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"
