"""`rollbackd status` prints annotation values anyone with `run.services.update` can write: terminal
escape sequences, bidirectional overrides and credentials in them must not reach the terminal.
`print_status` with the real Cloud Run client against the Cloud Run fake (no Pub/Sub needed)."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Iterator

import pytest

from daemon.clock import VirtualClock
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.live import LiveClients, print_status
from daemon.settings import Settings
from daemon.terminal_text import printable
from tests.integration.live_harness import Fakes

HOSTILE = ("promote: ok\x1b]0;pwned\x07\x1b[2J\x1b[31mFAKE ALERT\x1b[0m\r\x9b1m"
           "\u202edesrever password=hunter22hunter")


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with Fakes(VirtualClock(datetime(2026, 11, 24, 15, tzinfo=timezone.utc))) as f:
        yield f


def status(fakes: Fakes, *args: bool) -> str:
    settings = Settings.model_validate({
        "project": fakes.project, "locations": [fakes.location], "audit_subscription": "s", "principal": "r@x",
        "run_endpoint": fakes.cloud_run.address, "monitoring_endpoint": fakes.monitoring.address,
        "logging_endpoint": fakes.logging.address})
    out = io.StringIO()
    assert print_status(settings, out, as_json=bool(args and args[0]), clients=LiveClients(settings)) == 0
    return out.getvalue()


def test_status_never_prints_escape_codes_or_credentials(fakes: Fakes) -> None:
    annotations = {f"{P}status": "phase\x1b[8m", f"{P}phase": "2", f"{P}canary": "checkout-00042-vux",
                   f"{P}baseline": "checkout-00041-mib", f"{P}last-decision": HOSTILE}
    fakes.cloud_run.add_service("checkout", fakes.project, fakes.location,
                                revisions=["checkout-00041-mib", "checkout-00042-vux"],
                                traffic=[("checkout-00041-mib", 75, ""), ("checkout-00042-vux", 25, "canary")],
                                labels={"rollbackd": "enabled"}, annotations=annotations)
    text = status(fakes)
    assert "checkout" in text and "FAKE ALERT" in text  # shown, but inert
    for bad in ("\x1b", "\x07", "\x9b", "\r", "\u202e", "hunter22hunter"):
        assert bad not in text
    assert "\\x1b[31mFAKE ALERT" in text and "\\u202e" in text and "password=[REDACTED]" in text
    assert text.count("\n") == 2  # one row, one 'last:' line: no injected line breaks
    [row] = [json.loads(line) for line in status(fakes, True).splitlines()]
    assert row["last_decision"].startswith("promote: ok\x1b]0;pwned")  # JSON escapes it on the wire
    assert "hunter22hunter" not in json.dumps(row)


def test_printable() -> None:
    assert printable("phase 2: ok") == "phase 2: ok"
    assert printable("a\x1b[2Jb\nc\u200bd") == "a\\x1b[2Jb\\x0ac\\u200bd"
    assert printable("x" * 600).endswith("…") and len(printable("x" * 600)) == 500


def test_status_names_the_region_and_never_picks_one_of_two_same_named_services(fakes: Fakes) -> None:
    """`checkout` in two regions: both rows name their region; asked for `checkout` alone, status
    lists the regions and exits 2; `--region` (or the resource name) picks one."""
    for location, canary_percent in (("us-central1", 5), (fakes.location, 50)):
        fakes.cloud_run.add_service("checkout", fakes.project, location,
                                    revisions=["checkout-00041-mib", "checkout-00042-vux"],
                                    traffic=[("checkout-00041-mib", 100 - canary_percent, ""),
                                             ("checkout-00042-vux", canary_percent, "canary")],
                                    labels={"rollbackd": "enabled"},
                                    annotations={f"{P}status": "phase",
                                                 f"{P}phase": "1" if canary_percent == 5 else "3"})
    settings = Settings.model_validate({
        "project": fakes.project, "locations": [fakes.location, "us-central1"], "audit_subscription": "s",
        "principal": "r@x", "run_endpoint": fakes.cloud_run.address,
        "monitoring_endpoint": fakes.monitoring.address, "logging_endpoint": fakes.logging.address})
    clients = LiveClients(settings)

    def run(**options: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = print_status(settings, out, clients=clients, err=err, **options)  # type: ignore[arg-type]
        return code, out.getvalue(), err.getvalue()

    code, text, _ = run()
    assert code == 0
    assert f"checkout ({fakes.location})" in text and "checkout (us-central1)" in text
    code, text, err = run(service="checkout")
    assert code == 2 and text == ""
    assert "checkout is managed in 2 locations" in err and "--region" in err
    assert f"projects/{fakes.project}/locations/us-central1/services/checkout" in err
    assert f"projects/{fakes.project}/locations/{fakes.location}/services/checkout" in err
    code, text, _ = run(service="checkout", region="us-central1")
    assert code == 0 and text.startswith("checkout ") and "phase 1" in text and "checkout-00042-vux 5%" in text
    code, text, _ = run(service=f"projects/{fakes.project}/locations/{fakes.location}/services/checkout")
    assert code == 0 and "phase 3" in text and "checkout-00042-vux 50%" in text
    out = io.StringIO()
    assert print_status(settings, out, as_json=True, clients=clients, region="us-central1") == 0
    [row] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (row["service"], row["location"], row["project"]) == ("checkout", "us-central1", fakes.project)
    code, _, err = run(service="nothere", region="us-central1")
    assert code == 1 and "no managed service nothere" in err
