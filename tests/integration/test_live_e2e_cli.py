"""`rollbackd run --config` as a process: a wrong setting is one line and exit 2 before anything
starts; a good config starts the daemon (health server, Pub/Sub subscription, real clients against
the fakes), acts on a published deploy, and stops cleanly on SIGTERM."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.live_harness import (START, Fakes, LiveProcess, Publisher, SharedClock, Topics,
                                            audit_replace_service, http_status, live_settings, run_cli,
                                            wait_until, write_config)
from daemon.clock import SystemClock


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with Fakes(SharedClock(START, speed=60)) as started:
        yield started


def base_config(fakes: Fakes, tmp: Path) -> dict[str, Any]:
    return {"project": fakes.project, "locations": [fakes.location], "audit_subscription": "rollbackd-audit",
            "principal": "rollbackd@shop-e2e.iam.gserviceaccount.com", "http_port": 0,
            "journal": str(tmp / "state" / "journal.jsonl"), "run_endpoint": fakes.cloud_run.address,
            "monitoring_endpoint": fakes.monitoring.address, "logging_endpoint": fakes.logging.address}


def _policy_with_syntax_error(tmp: Path) -> str:
    path = tmp / "broken-policy.yaml"
    path.write_text("version: 1\nphases:\n  - traffic: 5%\n    duration: [10m\n", encoding="utf-8")
    return str(path)


BAD: dict[str, tuple[Any, str]] = {
    # case: (how to break the good config, a word the one-line error must contain)
    "unknown-setting": (lambda c, t: {**c, "tick_intervall": 30}, "tick_intervall"),
    "missing-project": (lambda c, t: {k: v for k, v in c.items() if k != "project"}, "project"),
    "empty-principal": (lambda c, t: {**c, "principal": " "}, "principal"),
    "no-locations": (lambda c, t: {**c, "locations": []}, "locations"),
    "tick-too-short": (lambda c, t: {**c, "tick_interval": 1}, "tick_interval"),
    "bad-metrics-mode": (lambda c, t: {**c, "metrics_mode": "prometheus"}, "metrics_mode"),
    "bad-label": (lambda c, t: {**c, "managed_label": "rollbackd"}, "managed_label"),
    "port-out-of-range": (lambda c, t: {**c, "http_port": 70000}, "http_port"),
    "missing-policy-file": (lambda c, t: {**c, "policy": str(t / "nope.yaml")}, "nope.yaml"),
    "invalid-policy-file": (lambda c, t: {**c, "policy": _policy_with_syntax_error(t)}, "broken-policy.yaml"),
    # An old config with one shared subscription: told which settings replace it (issue 12).
    "old-single-subscription": (lambda c, t: {**{k: v for k, v in c.items() if k != "audit_subscription"},
                                              "subscription": "rollbackd"}, "audit_subscription"),
    "metrics-over-pubsub-without-subscription": (lambda c, t: {**c, "metrics_mode": "pubsub"}, "metrics_subscription"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_wrong_setting_is_one_line_and_exit_2_before_anything_starts(case: str, fakes: Fakes, tmp_path: Path) -> None:
    breaker, word = BAD[case]
    config = write_config(breaker(base_config(fakes, tmp_path), tmp_path), tmp_path / "rollbackd.yaml")
    done = run_cli(["run", "--config", config], timeout_s=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rollbackd: ") and word in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    # Nothing started: no call reached Cloud Run, no journal was opened.
    assert fakes.cloud_run.requests.entries == []
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("text,word", [
    ("project: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_unreadable_config_file(text: str, word: str, tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.yaml"
    path.write_text(text, encoding="utf-8")
    done = run_cli(["run", "--config", str(path)], timeout_s=60)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and word in done.stderr


def test_missing_config_file_and_bad_environment(fakes: Fakes, tmp_path: Path) -> None:
    done = run_cli(["run", "--config", str(tmp_path / "absent.yaml")], timeout_s=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "cannot read config" in done.stderr
    config = write_config(base_config(fakes, tmp_path), tmp_path / "rollbackd.yaml")
    done = run_cli(["run", "--config", config], env={"ROLLBACKD_HTTP_PORT": "eighty"}, timeout_s=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "ROLLBACKD_HTTP_PORT" in done.stderr
    assert fakes.cloud_run.requests.entries == []


def test_good_config_runs_acts_and_stops_on_sigterm(pubsub_emulator: str, fakes: Fakes, tmp_path: Path) -> None:
    """The real `rollbackd run --config` (wall clock, 5 s ticks): subscribes, serves health, promotes
    a published deploy to 5% on the Cloud Run fake, exits 0 on SIGTERM."""
    topics = Topics.create("cli")
    settings = live_settings(fakes, topics, tmp_path / "journal.jsonl", tick_interval=5)
    config = write_config(settings, tmp_path / "rollbackd.yaml")
    fakes.add_managed_service("checkout", "checkout-00041-mib")
    fakes.deploy_canary("checkout", "checkout-00042-vux")
    process = LiveProcess(config, tmp_path / "daemon.log").start()
    try:
        port = process.port(timeout_s=60)
        assert http_status(port, "/healthz") == 200
        wait_until(lambda: http_status(port, "/readyz") == 200, 30, "/readyz after the first tick")
        entry = audit_replace_service("checkout", "checkout-00042-vux", "checkout-00041-mib", SystemClock().now())
        Publisher(topics.events).publish_deploy(entry)
        wait_until(lambda: fakes.cloud_run.traffic_of("checkout").get("checkout-00042-vux") == 5, 30,
                   "the canary at 5%")
    finally:
        rc = process.terminate()
    assert rc == 0
    decisions = [r for r in process.records() if r.get("type") == "decision"]
    assert [(d["action"], d["canary_percent"]) for d in decisions] == [("promote", 5)]
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [r["decision_id"] for r in journal if r["type"] == "decision"] == [decisions[0]["decision_id"]]
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
