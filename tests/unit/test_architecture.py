"""The shape of the code, checked: no import cycles, imports only point down the layers, small modules.

The packages are read with :mod:`ast` (nothing is imported), so every import counts: module-level,
inside a function (the lazy imports of boto3-free paths) and under ``TYPE_CHECKING`` (the
latter only for the layers: a type-only import cannot deadlock at run time, but it still ties a
lower layer to a higher one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("drills", "validators")

# Bottom to top. A module may import its own layer or any layer below, never one above. The first
# matching prefix decides (longest first), so a package can sit lower than its subpackages.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaves: errors, time, waiting, OS helpers, plain data",
        (
            "validators",  # a package of its own: knows an Endpoint, nothing of drills
            "drills",  # the package itself (__version__)
            "drills.errors",
            "drills.clock",
            "drills.wait",
            "drills.osutil",
            "drills.resources",
            "drills.measure",
            "drills.scrub",
            "drills.yamlsafe",
            "drills.trend",
            "drills.outcome",
            "drills.forecast_poll",
            "drills.progress",
            "drills.cancel",
        ),
    ),
    (
        "shared services: journal, logs, evidence, sources, the backend protocol",
        (
            "drills.journal",
            "drills.logs",
            "drills.evidence",
            "drills.backends.declare",
            "drills.backends.base",
            "drills.history",
            "drills.report",
            "drills.reader",
            "drills.engines.server_record",
            "drills.ledger",
            "drills.metrics",
            "drills.notify",
            "drills.record_model",
        ),
    ),
    ("engines and providers, and the registry that finds them", ("drills.engines", "drills.aws", "drills.backends")),
    (
        "the drill: runbook, machine, cleanup, record",
        (
            "drills.runbook",
            "drills.keep",
            "drills.machine",
            "drills.cleanup",
            "drills.record",
            "drills.sweep",
            "drills.deliver",
            "drills.aborted",
            "drills.asl",
            "drills.asl_fleet",
        ),
    ),
    (
        "the API, and what the operator asks of it (doctor, fleets, the Step Functions worker)",
        ("drills.api", "drills.doctor", "drills.doctor_facts", "drills.fleet", "drills.sfn_worker"),
    ),
    (
        "the faces: CLI, summary rendering, demos",
        (
            "drills.cli",
            "drills.cli_evidence",
            "drills.cli_ops",
            "drills.cli_fleet",
            "drills.cli_sfn",
            "drills.render",
            "drills.junit",
            "drills.demo",
        ),
    ),
]

# Engines and providers are siblings: none imports another (what they share lives lower down).
SIBLINGS = ("drills.engines.postgres", "drills.engines.mariadb", "drills.aws")

MAX_LINES = 525  # "about 500": a module a reader holds in mind at once; the largest four are 503-523 today
# Modules allowed over MAX_LINES, each with why splitting it would not make it easier to read.
LONG_MODULES: dict[str, str] = {}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    type_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _resolve(name: str) -> str | None:
    """The module of ours an imported name lives in (``pkg.mod.attr`` -> ``pkg.mod``), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _edges(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                line = getattr(node, "lineno", 0)
                yield Edge(module, resolved, line, line in type_only)


EDGES = [edge for module, path in MODULES.items() for edge in _edges(module, path)]


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            nested = module.startswith(prefix + ".") and prefix != "drills"  # "drills" is its __init__ only
            if (module == prefix or nested) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best[1]


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_code() -> None:
    """Guards the guards: a walk that found nothing would pass every test below."""
    assert {"drills.cli", "drills.machine", "drills.engines.postgres.backend", "drills.aws.calls"} <= set(MODULES)
    assert Edge("drills.cli", "drills.errors", 23, False) in EDGES or any(
        e.source == "drills.cli" and e.target == "drills.errors" for e in EDGES
    )
    assert any(e.type_only for e in EDGES)  # TYPE_CHECKING imports are recognised as such
    assert any(e.source == "drills.api" and e.target.startswith("drills.") for e in EDGES)


def test_no_import_cycles() -> None:
    cycles = _cycles([e for e in EDGES if not e.type_only])
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_only_point_down() -> None:
    upward = [
        f"{MODULES[e.source].relative_to(ROOT)}:{e.line}: {e.source} (layer {layer_of(e.source)}) imports "
        f"{e.target} (layer {layer_of(e.target)}: {LAYERS[layer_of(e.target)][0]})"
        for e in EDGES
        if e.source.startswith("drills") and layer_of(e.target) > layer_of(e.source)
    ]
    assert not upward, "\n".join(upward)


def test_engines_and_providers_do_not_import_each_other() -> None:
    def family(module: str) -> str | None:
        return next((s for s in SIBLINGS if module == s or module.startswith(s + ".")), None)

    crossing = [
        f"{e.source} imports {e.target}"
        for e in EDGES
        if family(e.source) and family(e.target) and family(e.source) != family(e.target)
    ]
    assert not crossing, crossing


def test_validators_know_nothing_of_drills() -> None:
    leaks = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in EDGES
        if e.source.startswith("validators") and e.target.startswith("drills")
    ]
    assert not leaks, leaks


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    if module in LONG_MODULES:
        assert lines > MAX_LINES, f"{module} is {lines} lines now: drop it from LONG_MODULES"
        return
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by job"


def test_the_layer_rules_catch_an_upward_import() -> None:
    """The rules themselves: an engine importing the machine, or the machine the CLI, is upward."""
    assert layer_of("drills.engines.postgres.backend") < layer_of("drills.machine") < layer_of("drills.cli")
    assert layer_of("drills.errors") < layer_of("drills.journal") < layer_of("drills.aws.rds")
    assert layer_of("drills.backends.base") < layer_of("drills.backends")
    made_up = [Edge("a", "b", 1, False), Edge("b", "c", 1, False), Edge("c", "a", 1, False), Edge("c", "d", 1, False)]
    assert _cycles(made_up) == [["a", "b", "c"]]


# Sleeping outside the one wait primitive: the clock itself, and the demo pacing its source's writes.
SLEEPERS = {
    "drills.clock": "SystemClock.sleep is the one real sleep",
    "drills.demo.postgres": "paces the demo source's writes, waits for nothing",
    "drills.demo.mariadb": "paces the demo source's writes, waits for nothing",
}


def test_every_wait_goes_through_the_one_poll() -> None:
    """No ``time.sleep`` outside the clock, and no hand-written loop that sleeps: waits are ``drills.wait.poll``."""
    found: list[str] = []
    for module, path in MODULES.items():
        if module in SLEEPERS or module == "drills.wait":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "time.sleep":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: time.sleep")
            if isinstance(node, ast.While | ast.For):
                sleeps = [
                    n
                    for n in ast.walk(node)
                    if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "sleep"
                ]
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: a loop that sleeps" for _ in sleeps[:1]]
    assert not found, "\n".join(found)
