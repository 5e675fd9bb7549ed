#!/usr/bin/env python3
"""The module graph of a crate's src/ (default: runtime/src): which top-level module uses which
(`use crate::X` and `crate::X::` paths in code outside tests), printed layer by layer, lowest
first, each module with what it uses. Exits 1, naming them, if modules depend on each other in
a cycle. CI runs it.

    python3 scripts/module-graph.py [runtime/src]
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runtime/src")
modules = sorted(
    p.stem if p.is_file() else p.name
    for p in src.iterdir()
    if (p.suffix == ".rs" and p.stem not in ("lib", "main")) or p.is_dir()
)
uses = {m: set() for m in modules}
for path in src.rglob("*.rs"):
    parts = path.relative_to(src).parts
    top = parts[0][:-3] if len(parts) == 1 else parts[0]
    if top not in uses or path.name == "tests.rs" or "tests" in parts[:-1]:
        continue
    text = path.read_text().split("#[cfg(test)]")[0]
    text = "\n".join(line.split("//")[0] for line in text.splitlines())
    found = set(re.findall(r"crate::(\w+)", text))
    for block in re.findall(r"use crate::\{([^;]*)\};", text, re.S):
        found |= set(re.findall(r"(?:^|[\s,{])(\w+)(?=::|\s*[,}]|$)", block))
    uses[top] |= {m for m in found if m in uses and m != top}

# Layers: a module sits one above the highest module it uses.
layer = {}
def depth(module, seen=()):
    if module in seen:
        return None  # a cycle
    if module not in layer:
        below = [depth(used, seen + (module,)) for used in uses[module]]
        if any(d is None for d in below):
            return None
        layer[module] = 1 + max(below, default=-1)
    return layer[module]

cyclic = [m for m in modules if depth(m) is None]
if cyclic:
    print("modules in a dependency cycle: " + ", ".join(cyclic))
    for module in cyclic:
        print(f"  {module} -> {', '.join(sorted(uses[module] & set(cyclic)))}")
    sys.exit(1)
for level in range(max(layer.values()) + 1):
    row = [m for m in modules if layer[m] == level]
    print(f"layer {level}:")
    for module in row:
        used = ", ".join(sorted(uses[module])) or "-"
        print(f"  {module:<12} uses {used}")
