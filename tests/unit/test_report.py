"""The replay report: self-contained HTML with inline SVG plots, deterministic, and really rendered
by a browser (headless Chromium screenshot; skipped without Chromium unless CI=true)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from daemon.bootstrap import engine_factory
from policies import load_default_policy
from simulations.replay import replay_file
from simulations.report import render_report, write_report
from simulations.report_data import wilson
from simulations.report_plots import BASELINE, CANARY

REPLAY = engine_factory("replay")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "simulations", "recordings")


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


@pytest.fixture(scope="module")
def errors_result(policy):
    return replay_file(os.path.join(CORPUS, "errors-x5.jsonl"), policy, keep_journal=True, build_engine=REPLAY)


def test_report_is_self_contained_with_every_section(errors_result, policy):
    page = render_report(errors_result, policy)
    assert page.count("<svg") == 3  # timeline, canary vs baseline, detector evidence
    for fetch in ("<script", "<link", " src=", "@import", "xlink:href=\"http"):
        assert fetch not in page, f"the report must not load anything ({fetch})"
    assert not re.search(r"url\((?!#)", page), "only in-page references (clip paths) are allowed"
    for needle in ("Traffic by phase", "Canary vs baseline", "Detector evidence", "Decisions",
                   "Captured error logs", "Policy in effect", "error_ratio", "rolled back"):
        assert needle in page
    assert page.count("<tr><td>") >= len(errors_result.decisions)


def test_report_is_deterministic(errors_result, policy):
    assert render_report(errors_result, policy) == render_report(errors_result, policy)


def test_report_covers_every_service_of_a_multi_service_recording(policy):
    result = replay_file(os.path.join(CORPUS, "multi-service.jsonl"), policy, keep_journal=True, build_engine=REPLAY)
    page = render_report(result, policy)
    for service in ("checkout", "payments", "search"):
        assert f"id='svc-{service}'" in page
    assert page.count("<svg") == 9


def test_report_shows_captured_error_log_patterns(errors_result, policy):
    logs = {"patterns": [{"count": 41, "pattern": "NullPointer in /cart"}]}
    journal = errors_result.journal + [{"type": "decision-logs", "decision_id": "x#3", "service": "checkout",
                                        "logs": logs}]
    result = type(errors_result)(recording=errors_result.recording, decisions=errors_result.decisions,
                                 journal=journal, engine=errors_result.engine)
    page = render_report(result, policy)
    assert "NullPointer in /cart" in page and "<td>41</td>" in page


def test_wilson_band_contains_the_rate():
    low, high = wilson(5, 1000)
    assert low < 0.005 < high
    assert wilson(0, 100)[0] == pytest.approx(0.0, abs=1e-12)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def _near(pixels: np.ndarray, hex_colour: str, tolerance: int = 40) -> int:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3].astype(int) - target).sum(axis=-1) < tolerance).sum())


def test_report_renders_in_headless_chromium(errors_result, policy, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI for the report screenshot test "
                        "(apt-get install chromium)")
        pytest.skip("chromium not installed")
    report = tmp_path / "report.html"
    shot = tmp_path / "shot.png"
    write_report(errors_result, policy, str(report))
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
         f"file://{report}"], capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    non_white = (pixels.min(axis=-1) < 235).mean()
    assert non_white > 0.03, "the page is (nearly) blank"
    # The canary and baseline colours appear only inside the plots: if the SVGs did not render,
    # these counts are zero.
    assert _near(pixels, CANARY) > 800, "canary series not drawn"
    assert _near(pixels, BASELINE) > 400, "baseline series not drawn"
    # The plots sit in the top part of the page (above the policy dump): most of the coloured
    # pixels must be there.
    coloured = np.abs(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)) > 60
    top = coloured[: pixels.shape[0] * 2 // 3].sum()
    assert top > 2000 and top >= 0.8 * coloured.sum()


def test_cli_replay_writes_the_report(tmp_path):
    out = tmp_path / "nested" / "r.html"
    entry = "import sys; from daemon.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", entry, "replay",
                           os.path.join(CORPUS, "memory-past-95.jsonl"), "--report", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert re.search(r"memory_utilization", page) and page.count("<svg") == 3
