"""The journal: a local JSON Lines file of every input event and every decision, with rotation.

It is itself a valid recording for `rollbackd replay` (output lines are skipped by the reader).
Decisions are written durably (flush + fsync) before any action is taken, so a crash can never lose
a decision that was acted on. Rotation renames `journal.jsonl` to `journal.jsonl.1` (and older ones
up the chain) once it passes `max_bytes`; `read_lines()` reads all files oldest first.

No credential is written: a record whose line might hold one (`daemon.core.redact.might_hold_secret`,
a cheap check) has its strings redacted first. Inputs are journaled as received, and a command's
reason or a rejected message's raw text is anybody's free text.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterator

from daemon.core.redact import might_hold_secret, redact_json


class FileJournal:
    def __init__(self, path: str, *, max_bytes: int = 64 * 1024 * 1024, keep: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any], *, durable: bool = False) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n"
        if might_hold_secret(line):
            line = json.dumps(redact_json(json.loads(line)), sort_keys=True, separators=(",", ":")) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()
            if durable:
                os.fsync(self._handle.fileno())
            if self._handle.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        os.fsync(self._handle.fileno())
        self._handle.close()
        for index in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._handle = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if not self._handle.closed:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()


def journal_files(path: str) -> list[str]:
    """Rotated files oldest first, then the current one."""
    rotated = []
    index = 1
    while os.path.exists(f"{path}.{index}"):
        rotated.append(f"{path}.{index}")
        index += 1
    files = list(reversed(rotated))
    if os.path.exists(path):
        files.append(path)
    return files


def read_lines(path: str) -> Iterator[str]:
    """Every complete line of the journal, oldest first. A torn last line (crash mid-write) is
    skipped: its event was never acknowledged, so Pub/Sub delivers it again."""
    for name in journal_files(path):
        with open(name, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.endswith("\n"):
                    yield line
