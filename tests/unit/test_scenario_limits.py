"""Scenario YAML with alias bombs: refused with one clear line before anything walks the expansion
(a 445-byte "billion laughs" file took 20 s and gigabytes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from simulations.scenario_file import ScenarioFileError, load_scenario_file, parse_scenario_text

LEVELS = "abcdefghi"


def laughs(levels: int = 9) -> str:
    """`a` is 9 strings, each next level 9 aliases of the one before: 9**levels leaves in ~450 bytes."""
    lines = ["name: lol", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip(LEVELS, LEVELS[1:levels]):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append(f"traffic: [*{LEVELS[levels - 1]}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs())
    assert len(path.read_bytes()) < 600
    with pytest.raises(ScenarioFileError) as info:
        load_scenario_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: too large: YAML aliases expand past")


def test_merge_key_bombs_are_refused_too() -> None:
    text = "x0: &x0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}\n" + "".join(
        f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 10) + "]\n" for i in range(1, 7)) + "name: n\n"
    with pytest.raises(ScenarioFileError, match="too large"):
        parse_scenario_text(text)


def test_small_aliases_still_work() -> None:
    text = ("name: aliases\ntraffic: {rps: 50}\nbaseline: {revision: r1, latency: &lat {median: 120ms}}\n"
            "canary: {revision: r2, latency: *lat}\n")
    spec = parse_scenario_text(text)
    assert spec.canary.latency.median == spec.baseline.latency.median == 120.0
