"""Decision logs for Cloud Logging: one structured JSON line per decision on stdout.

Uses the google-cloud-logging library's `StructuredLogHandler`, the format Cloud Run lifts into
LogEntries: `severity`, `message`, `logging.googleapis.com/labels` (`service`, `action`) and the
decision record itself as the rest of `jsonPayload`. No API calls, no credentials, nothing buffered
that a stopped instance could lose.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from daemon.core.decision import Decision, severity_of

NOTICE = 25  # Cloud Logging's NOTICE sits between INFO and WARNING
logging.addLevelName(NOTICE, "NOTICE")
_LEVELS = {"ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": NOTICE, "INFO": logging.INFO}


class DecisionLog:
    def __init__(self, stream: TextIO | None = None, *, project: str = "") -> None:
        from google.cloud.logging_v2.handlers import StructuredLogHandler

        self.logger = logging.getLogger("rollbackd.decisions")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler = StructuredLogHandler(stream=stream or sys.stdout, project_id=project or None)
        self.logger.handlers = [handler]

    def decision(self, decision: Decision) -> None:
        record = decision.to_json()
        severity = severity_of(decision.action)
        self.logger.log(_LEVELS[severity], f"{decision.service}: {decision.action} — {decision.reason}",
                        extra={"json_fields": record,
                               "labels": {"service": decision.service, "action": decision.action}})

    def error(self, message: str, **fields: Any) -> None:
        self.logger.error(message, extra={"json_fields": fields, "labels": {"service": fields.get("service", "*"),
                                                                              "action": "error"}})

    def info(self, message: str, **fields: Any) -> None:
        self.logger.info(message, extra={"json_fields": fields})
