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
