"""Which package may import which: `python -m tests.layering` lists every import that breaks
the rules below and exits 1, or prints nothing and exits 0. tests/test_layering.py runs it.

The rules, outermost first. A module may import from the packages its rule allows, from its
own package, and from third-party libraries, with these exceptions: pysyncobj is named only
by the Raft adapter (node/replication/raft.py) and the vendored copy it adapts; and the
adapter's users call only names RaftNode defines itself, never those it inherits from
pysyncobj's SyncObj.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Inside-out: storage knows nothing above it; http knows only its own interface.
NODE_BASE = ("node.errors", "node.config", "protocol")
ALLOWED: dict[str, tuple[str, ...]] = {
    "protocol": (),
    "worker": ("protocol",),
    "client": ("protocol",),
    "node.errors": (),
    "node.config": ("node.errors", "protocol"),
    "node.storage": NODE_BASE,
    "node.replication": (*NODE_BASE, "node.storage"),
    "node.observability": (*NODE_BASE, "node.replication", "node.scaling"),
    "node.scheduling": (*NODE_BASE, "node.storage", "node.replication", "node.observability"),
    "node.scaling": (*NODE_BASE, "node.scheduling"),
    "node.service": (
        *NODE_BASE,
        "node.storage",
        "node.replication",
        "node.scheduling",
        "node.scaling",
        "node.observability",
    ),
    "node.http": NODE_BASE,
    "node.app": ("node",),
    "node.__main__": ("node",),
    "provision": ("protocol", "node.scaling.backends"),
    "bench": ("node", "worker", "client", "protocol"),
    "tests": ("node", "worker", "client", "provision", "protocol", "bench"),
}
FIRST_PARTY = ("node", "worker", "client", "provision", "protocol", "bench", "tests")
ADAPTER = "node.replication.raft"
VENDORED = "node.replication.syncobj"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rule_for(module: str) -> str | None:
    """The most specific package in ALLOWED that holds `module`."""
    holders = [p for p in ALLOWED if _within(module, p)]
    return max(holders, key=len) if holders else None


def imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level] if node.level else []
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
            # `from node.http import public` imports node.http.public
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def check_imports(module: str, path: str, tree: ast.AST) -> list[Violation]:
    """Imports of `module` (parsed as `tree` from `path`) that break the rules."""
    rule = rule_for(module)
    out = []
    for line, target in imports(tree, module):
        top = target.split(".")[0]
        if top == "pysyncobj" or _within(target, VENDORED):
            if not any(_within(module, p) for p in (ADAPTER, VENDORED, "tests")):
                out.append(
                    Violation(
                        path,
                        line,
                        f"{module} imports {target}: only the "
                        f"Raft adapter ({ADAPTER}) may use pysyncobj",
                    )
                )
            continue
        if top not in FIRST_PARTY or rule is None or _within(target, rule):
            continue
        if _within(module, "tests") or any(_within(target, a) for a in ALLOWED[rule]):
            continue
        if rule in ("node.app", "node.__main__") and top == "node":
            continue
        # A name of the parent package (e.g. `from node.scaling import loop` seen as
        # node.scaling) is fine when the module itself is allowed.
        if any(_within(a, target) for a in ALLOWED[rule]) and "." in target:
            continue
        out.append(
            Violation(
                path,
                line,
                f"{module} ({rule}) imports {target}; "
                f"{rule} may import {', '.join(ALLOWED[rule]) or 'nothing first-party'}",
            )
        )
    return out


def syncobj_names() -> set[str]:
    """Names pysyncobj's SyncObj defines that RaftNode does not define itself."""
    from node.replication.raft import RaftNode
    from node.replication.syncobj import SyncObj

    inherited = {n for cls in SyncObj.__mro__ if cls is not object for n in vars(cls)}
    own = set(vars(RaftNode))
    return {n for n in inherited - own if not n.startswith("__")}


def check_adapter_names(
    module: str, path: str, tree: ast.AST, forbidden: set[str]
) -> list[Violation]:
    """Uses in the node, outside the adapter, of pysyncobj's names (`forbidden`)."""
    if not _within(module, "node") or _within(module, ADAPTER) or _within(module, VENDORED):
        return []
    return [
        Violation(
            path,
            node.lineno,
            f"{module} uses pysyncobj's {node.attr}; use the "
            "Raft adapter's own names (node/replication/raft.py)",
        )
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in forbidden
        and not node.attr.startswith("__")
    ]


def sources() -> list[Path]:
    skip = (ROOT / ".venv", ROOT / "node" / "replication" / "syncobj")
    return sorted(
        p
        for top in FIRST_PARTY
        for p in (ROOT / top).rglob("*.py")
        if not any(p.is_relative_to(s) for s in skip)
    )


def violations() -> list[Violation]:
    forbidden = syncobj_names()
    out = []
    for path in sources():
        module, shown = module_name(path), str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), shown)
        out += check_imports(module, shown, tree)
        out += check_adapter_names(module, shown, tree, forbidden)
    return out


def main() -> int:
    found = violations()
    for v in found:
        print(v)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
