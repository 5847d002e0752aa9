"""Policy hot reload: a changed valid file is picked up; an invalid one keeps the last good policy,
logs an error and increments the counter."""
from __future__ import annotations

import os
import pathlib

from daemon.runner import PolicyReloader
from daemon.telemetry import PrometheusTelemetry
from policies import default_policy_path


def _counter(telemetry: PrometheusTelemetry, result: str) -> float:
    return telemetry.registry.get_sample_value("rollbackd_policy_reloads_total", {"result": result}) or 0.0


def test_reload_on_change_and_keep_last_good(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "policy.yaml"
    text = pathlib.Path(default_policy_path()).read_text()
    path.write_text(text)
    telemetry = PrometheusTelemetry()
    errors: list[str] = []
    reloader = PolicyReloader(str(path), telemetry=telemetry, on_error=errors.append)
    assert reloader().comparison.alpha == 0.01

    path.write_text(text.replace("alpha: 1%", "alpha: 0.5%"))
    os.utime(path, (1, 1))  # a different mtime, whatever the file system's resolution
    reloader.check()
    assert reloader().comparison.alpha == 0.005
    assert _counter(telemetry, "ok") == 1

    path.write_text(text.replace("alpha: 1%", "alpha: lots"))
    os.utime(path, (2, 2))
    reloader.check()
    assert reloader().comparison.alpha == 0.005  # the last good policy stays
    assert _counter(telemetry, "error") == 1
    assert errors and "keeping the last good policy" in errors[0] and "comparison.alpha" in errors[0]


def test_sighup_request_reloads_even_without_a_change(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(pathlib.Path(default_policy_path()).read_text())
    telemetry = PrometheusTelemetry()
    reloader = PolicyReloader(str(path), telemetry=telemetry, on_error=lambda m: None)
    reloader.check()
    assert _counter(telemetry, "ok") == 0
    reloader.request()
    reloader.check()
    assert _counter(telemetry, "ok") == 1
