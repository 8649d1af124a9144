"""The hub's layers, checked: features sit on foundations, imports point one way, no cycles.

  python3 tests/layers.py          (tests/run.sh runs it; exit 1 on a violation)

Reads every `crate::<module>` reference in hub/src (code, not comments), at the level of the
top-level modules, and checks ARCHITECTURE.md's rules:

1. nothing in a foundation refers to a feature (or to the composition root);
2. no cycle between modules, features and foundations alike.

KNOWN lists the violations that existed when the check was introduced (issue 18), each an edge
to remove; the check fails on any violation not in it, and on an entry that no longer occurs (so
the list only shrinks).
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hub", "src")

# Lowest first. A module may use modules of lower foundation layers (and its own layer's
# modules, as long as no cycle forms).
FOUNDATIONS = [
    ["error", "config", "telemetry", "text", "files"],
    ["db", "metrics"],
    ["storage"],
    ["index", "http", "mail"],
    ["ingest", "audit"],
    ["state"],
    ["access"],
    ["uploads", "archive", "ui"],
]
FEATURES = {
    "accounts", "communities", "transfers", "shares", "dicomweb", "connectors", "ohif",
    "audit_trail", "retention", "backup", "health", "fuzzing", "cli",
}
ROOTS = {"startup", "lib", "main"}

KNOWN = {
    # (from, to): why it is still there
}


def layer_of(module):
    for i, layer in enumerate(FOUNDATIONS):
        if module in layer:
            return i
    return None


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return "\n".join(line.split("//", 1)[0] if "//" in line and '"' not in line.split("//", 1)[0] else line for line in src.splitlines())


def edges():
    out = collections.defaultdict(set)
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            module = os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".rs")
            src = strip_comments(open(path, encoding="utf-8").read())
            targets = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", src))
            for group in re.findall(r"\bcrate::\{([^}]*)\}", src):
                targets |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
            for t in targets:
                if t != module and os.path.exists(os.path.join(ROOT, t)) or os.path.exists(os.path.join(ROOT, t + ".rs")):
                    if t != module:
                        out[module].add(t)
    return out


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main():
    graph = edges()
    modules = set(graph) | {t for ts in graph.values() for t in ts}
    problems = []
    unknown = sorted(m for m in modules if layer_of(m) is None and m not in FEATURES and m not in ROOTS)
    if unknown:
        problems.append(f"modules in no layer (add them to tests/layers.py and ARCHITECTURE.md): {', '.join(unknown)}")
    violations = set()
    for a in sorted(graph):
        la = layer_of(a)
        for b in sorted(graph[a]):
            lb = layer_of(b)
            if la is not None and (b in FEATURES or b in ROOTS):
                violations.add((a, b))
            elif la is not None and lb is not None and lb > la:
                violations.add((a, b))
    # Cycles: an edge inside a cycle counts when both ends are in it.
    for comp in cycles({a: {b for b in bs if (a, b) not in violations} for a, bs in graph.items()}):
        for a in comp:
            for b in graph.get(a, ()):
                if b in comp:
                    violations.add((a, b))
    for v in sorted(violations - set(KNOWN)):
        problems.append(f"{v[0]} -> {v[1]}: a foundation must not refer to a feature or to a higher layer, and modules must not form a cycle")
    for v in sorted(set(KNOWN) - violations):
        problems.append(f"{v[0]} -> {v[1]} is fixed: remove it from KNOWN in tests/layers.py")
    if problems:
        print("layer check failed:")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print(f"layers ok: {len(modules)} modules, {sum(len(v) for v in graph.values())} edges, {len(KNOWN)} known violations left")


if __name__ == "__main__":
    main()
