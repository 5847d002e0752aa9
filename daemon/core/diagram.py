"""Generate the README's state diagram from the transition table, so the picture cannot drift.

`python -m daemon.core.diagram` prints a Mermaid `stateDiagram-v2`; a test checks the README holds
exactly this text.
"""
from __future__ import annotations

from collections import defaultdict

from daemon.core.rollout import TRANSITIONS, Status


def mermaid() -> str:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (source, kind), targets in sorted(TRANSITIONS.items(), key=lambda item: (item[0][0].value, item[0][1])):
        for target in sorted(targets, key=lambda s: s.value):
            if target is source or kind == "resync":
                # Self-loops (ignored evidence, duplicates) and resync (the durable record read back
                # from the service, which may lead anywhere) would drown the picture.
                continue
            edges[(source.value, target.value)].append(kind)
    lines = ["stateDiagram-v2"]
    for (source, target), kinds in sorted(edges.items()):
        label = ", ".join(dict.fromkeys(k.replace("command:", "") for k in kinds))
        lines.append(f"    {_node(source)} --> {_node(target)}: {label}")
    for status in sorted(Status, key=lambda s: s.value):
        if status.terminal:
            lines.append(f"    {_node(status.value)} --> [*]")
    lines.insert(1, f"    [*] --> {_node(Status.IDLE.value)}")
    return "\n".join(lines) + "\n"


def _node(name: str) -> str:
    return name.replace("-", "_")


if __name__ == "__main__":
    print(mermaid(), end="")
