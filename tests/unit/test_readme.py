"""The README's state diagram is the one generated from the transition table."""
import pathlib

from daemon.core.diagram import mermaid

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_diagram_matches_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "```mermaid\n" + mermaid() + "```" in readme


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make run" in head and "make test" in head
