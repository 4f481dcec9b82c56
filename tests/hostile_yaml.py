"""Hostile runbook documents, shared by the loader's tests and its benchmark so both probe the same input."""

from __future__ import annotations

import textwrap

BASE = textwrap.dedent(
    """\
    name: shop
    source: {kind: postgres-dump, archive: shop.dump}
    objectives: {rto_seconds: 600, rpo_seconds: 60}
    """
)


def laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each anchor lists the previous one `width` times; 9x9 is ~387 million strings."""
    rows = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


DEEP_NESTING = BASE + "tags: " + "[" * 20000 + "]" * 20000 + "\n"
OVER_CAP = BASE + "#" + "x" * (1 << 20) + "\n"  # one byte over the loader's 1 MiB cap
