"""No credential rollbackd reads comes out of anything it writes (issue 12 §5).

The live daemon (`run_live`, real google-cloud clients) against the Pub/Sub emulator and the gRPC
fakes, on a virtual clock. Credentials are seeded into every input:
- error log entries of the bad revision (Logging fake): bearer token, API key, URL password, JWT,
  PEM private key, `password=`;
- Pub/Sub events: the deploy audit entry (labels, user agent, container env), command reasons (an
  authorised pause, resume and abort, an unauthorised abort), an incident summary, a message that is
  not JSON;
- Cloud Run services (Cloud Run fake): labels, a foreign annotation, and the `rollbackd.dev/*`
  annotations of a rollout a previous rollbackd left (read back on start);
- metric labels (Monitoring fake).
The canary is aborted by an authorised command and rolled back (error logs captured, notification
published). Then every output is
searched: decision-log lines, the journal, notifications on the notification topic, the HTML report
and `--json` output of `rollbackd replay` on the journal (the CLI in process), the `rollbackd.dev/*`
annotations in every UpdateService the Cloud Run fake received, `rollbackd status` (text and
--json) and /metrics.

Not searched: annotations rollbackd does not own (`example.com/dsn` below) go back unchanged in the
full-service update, as Cloud Run requires; they are the service owner's text, not rollbackd's.
Narrower tests cover what this run cannot reach: a 10 MB reason (tests/unit/test_decision_log.py),
a recording with credentials replayed into a report (tests/unit/test_report_safety.py), escape codes
in `status` (tests/integration/test_status_output.py).
"""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.adapters.journal import journal_files
from daemon.cli import main as cli_main
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.live import LiveClients, print_status
from tests.fakes.monitoring import REQUEST_COUNT
from tests.integration.live_harness import (MANAGED, START, TOKENS, Fakes, LiveDaemon, Publisher, RevisionProfile,
                                            SharedClock, Topics, TrafficFeeder, audit_replace_service, connect_audit_sink,
                                            ctl_as,
                                            journal_records, live_settings, monitoring_sink, wait_until)

pytestmark = pytest.mark.integration

BASELINE, CANARY = "checkout-00041-mib", "checkout-00042-vux"
CART_BASE, CART_CANARY = "cart-00007-abc", "cart-00008-def"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2dKd3RTZWNyZXQifQ.LogJwtSignature111"
# name -> the secret itself (what must never appear in an output)
SECRETS = {
    "log bearer": "ya29.A0logBearerSecret111",
    "log api key": "AIzaSyLogApiKey000000000000000000000001",
    "log url password": "LogUrlPassw0rd111",
    "log jwt": "LogJwtSignature111",
    "log private key": "MIIElogPrivateKeyBody111",
    "log password": "LogPasswordValue111",
    "audit label": "AuditLabelTok222",
    "audit user agent": "AuditUserAgentTok222",
    "audit env": "AuditEnvPassw0rd222",
    "pause reason": "PauseReasonPass333",
    "resume reason": "ResumeReasonTok333",
    "refused reason": "RefusedBearer333",
    "abort reason": "AbortClientSecret333",
    "incident summary": "IncidentPassw0rd444",
    "not json": "GarbageApiKey444",
    "service label": "SvcLabelKey555",
    "restored annotation": "CartAnnoSecret555",
    "restored hold reason": "CartHoldToken555",
    "metric label": "MetricLabelKey666",
}
S = SECRETS
ERROR_LINES = [
    f"upstream 401 from payments: Authorization: Bearer {S['log bearer']}",
    f"GET https://maps.example/geo?key={S['log api key']}&lang=en failed: 503",
    f"cannot connect to postgres://checkout:{S['log url password']}@10.0.0.7:5432/orders",
    f"token rejected: {JWT}",
    f"bad key file: -----BEGIN PRIVATE KEY-----\n{S['log private key']}\n-----END PRIVATE KEY-----",
    f"config dump: user=checkout password={S['log password']} pool=10",
] * 3
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
SPEED = 120.0


def deploy_entry(clock: SharedClock) -> dict:
    entry = audit_replace_service("checkout", CANARY, BASELINE, clock.now())
    service = entry["protoPayload"]["request"]["service"]
    service["metadata"]["labels"].update({"rollbackd": "enabled", "token": S["audit label"]})
    service["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "DATABASE_URL", "value": f"postgres://app:{S['audit env']}@db/orders"}]
    entry["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] = \
        f"curl/8.0 access_token={S['audit user agent']}"
    return entry


def command(fakes: Fakes, clock: SharedClock, action: str, by: str, reason: str, service: str = "checkout") -> None:
    """`rollbackd ctl` as `by` (its test token): the annotation on the service, the sink's audit entry."""
    token = next(token for token, email in TOKENS.items() if email == by)
    code, _, err = ctl_as(token, [action, service, "--reason", reason], fakes, clock)
    assert code == 0, err


def seed_cloud_run(fakes: Fakes, clock: SharedClock) -> None:
    fakes.add_managed_service("checkout", BASELINE, labels={**MANAGED, "api-key": S["service label"]})
    fakes.deploy_canary("checkout", CANARY)
    started = clock.now() - timedelta(minutes=3)
    stamp = started.isoformat().replace("+00:00", "Z")
    fakes.cloud_run.add_service(
        "cart", fakes.project, fakes.location, revisions=[CART_BASE, CART_CANARY],
        traffic=[(CART_BASE, 95, ""), (CART_CANARY, 5, "canary")],
        labels={**MANAGED, "team": "web"},
        annotations={f"{P}rollout-id": f"cart/{CART_CANARY}", f"{P}status": "phase", f"{P}phase": "1",
                     f"{P}phase-started": stamp, f"{P}rollout-started": stamp, f"{P}canary": CART_CANARY,
                     f"{P}baseline": CART_BASE, f"{P}canary-percent": "5",
                     f"{P}hold-reason": f"paused by sre@example.com: token={S['restored hold reason']}",
                     f"{P}last-decision": f"promote: ok; secret={S['restored annotation']}",
                     f"{P}decisions": "1",
                     "example.com/dsn": "mysql://root:NotRollbackdsText@db"})


def metric_label_sink(fakes: Fakes):
    write = monitoring_sink(fakes.monitoring)

    def sink(m) -> None:
        write(m)
        # A zero-valued series with a credential in a metric label: changes no count.
        fakes.monitoring.add_point(REQUEST_COUNT, m.time, 0, service=m.service, revision=m.revision,
                                   labels={"response_code": "200", "response_code_class": "2xx", "route": "",
                                           "x_api_key": f"api_key={S['metric label']}"})
    return sink


def leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_seeded_credential_reaches_any_output(pubsub_emulator: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    clock = SharedClock(START, speed=SPEED)
    with Fakes(clock) as fakes:
        topics = Topics.create("secrets")
        settings = live_settings(fakes, topics, tmp_path / "journal.jsonl")
        connect_audit_sink(fakes, topics, clock)
        seed_cloud_run(fakes, clock)
        # Stamped ahead: whenever (in virtual time) the rollback comes, they are inside its query window.
        fakes.seed_error_logs("checkout", CANARY, ERROR_LINES, clock.now() + timedelta(minutes=60))
        publisher = Publisher(topics.events)
        feeder = TrafficFeeder(clock, fakes.cloud_run, metric_label_sink(fakes))
        feeder.add("checkout", {BASELINE: HEALTHY, CANARY: HEALTHY})
        feeder.add("cart", {CART_BASE: HEALTHY, CART_CANARY: HEALTHY})
        with LiveDaemon(settings, clock) as live:
            feeder.start()
            try:
                entry = deploy_entry(clock)
                publisher.publish_deploy(entry)
                wait_until(lambda: live.decisions("checkout"), 30, "the rollout to start")
                command(fakes, clock, "pause", "sre@example.com", f"rotating creds, password={S['pause reason']}")
                wait_until(lambda: any(d.get("trigger") == "command:pause" for d in live.decisions("checkout")),
                           30, "the pause decision")
                command(fakes, clock, "resume", "sre@example.com",
                        f"done, see https://x.example/cb?token={S['resume reason']}")
                command(fakes, clock, "abort", "mallory@evil.example", f"Authorization: Bearer {S['refused reason']}")
                # An authorised abort rolls the canary back: its reason is in the last-decision annotation.
                command(fakes, clock, "abort", "sre@example.com", f"bad build; client_secret={S['abort reason']}")
                publisher.client.publish(topics.events, f"not json api_key={S['not json']}".encode(),
                                         ordering_key="checkout").result(timeout=30)
                wait_until(lambda: any(d["action"] == "rollback" for d in live.decisions("checkout")), 60,
                           "the rollback")
                wait_until(lambda: fakes.cloud_run.traffic_of("checkout")[BASELINE] == 100, 15, "100% baseline")
                notes = topics.pull_notifications(1)
                Publisher(topics.incidents).publish_json({"version": "1.2", "incident": {
                    "incident_id": "0.n1", "state": "open", "started_at": int(clock.now().timestamp()) - 60,
                    "policy_name": "checkout 5xx",
                    "summary": f"5xx high; dashboard https://admin:{S['incident summary']}@grafana.internal",
                    "resource": {"labels": {"service_name": "checkout", "revision_name": CANARY}}}},
                    key="checkout")
                wait_until(lambda: sum(1 for r in journal_records(settings.journal)
                                       if r.get("type") == "alert") >= 1, 20, "the incident journaled")
            finally:
                feeder.stop()
            metrics_text = "\n".join(f"{k} {v}" for k, v in live.scrape().items())
            live.stop()
            decision_log = live.out.text()
            notes += topics.pull_notifications(10, timeout_s=2)

        # The inputs did arrive and were acted on (else the search below proves nothing).
        journal_text = "".join(Path(f).read_text() for f in journal_files(settings.journal))
        journal = journal_records(settings.journal)
        kinds = {r.get("type") for r in journal}
        assert {"deploy", "command", "rejected", "alert", "decision", "decision-logs"} <= kinds, kinds
        logs = next(r for r in journal if r.get("type") == "decision-logs" and r["service"] == "checkout")["logs"]
        assert logs["total"] == len(ERROR_LINES) and len(logs["patterns"]) == 6
        assert any(n["action"] == "rollback" for n in notes)
        updates = [req.service for req in fakes.cloud_run.requests.of("UpdateService")]
        assert any(u.name.endswith("/checkout") for u in updates)
        written = [{k: v for k, v in u.annotations.items() if k.startswith(P)} for u in updates]
        assert all(written)

        status_out = io.StringIO()
        print_status(settings, status_out, clients=LiveClients(settings))
        print_status(settings, status_out, as_json=True, clients=LiveClients(settings))
        report = tmp_path / "report.html"
        capsys.readouterr()
        assert cli_main(["replay", str(settings.journal), "--report", str(report), "--json"]) == 0
        replayed = capsys.readouterr()
        # What the replay decides may differ with the order events were journaled in; only its
        # output matters here, and there must be some.
        assert '"type":"decision"' in replayed.out and report.exists()

    outputs = {
        "decision log": decision_log,
        "journal": journal_text,
        "notifications": json.dumps(notes),
        "annotations written": json.dumps(written),
        "status": status_out.getvalue(),
        "replay --json": replayed.out + replayed.err,
        "HTML report": report.read_text(),
        "/metrics": metrics_text,
    }
    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    assert found == {}, f"credentials leaked: {found}"
    for name in ("decision log", "journal", "notifications"):
        assert "[REDACTED]" in outputs[name], name
