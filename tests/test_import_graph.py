"""The import graph of the project's own modules, read from the source with ``ast`` (nothing imported).

Rules (README "Layout", style.md practice 1 and 9):

- no import cycle among ``cli``, ``cachekit`` and ``stores`` modules;
- layers go one way, ``cli`` -> ``cachekit`` -> ``stores``: ``stores`` never imports ``cachekit`` or
  ``cli``, ``cachekit`` never imports ``cli`` (nor click: commands parse, the library takes typed
  arguments);
- a method module (``cachekit/methods/*.py`` but ``base.py`` and ``__init__.py``) never imports
  another method module.

Every import statement counts, at module level or inside a function (a lazy import is still a
dependency), and a package's ``__init__`` counts as a module with the imports it re-exports.
Imports under ``if TYPE_CHECKING:`` never run and are left out. ``from pkg import name`` is an
edge to ``pkg.name`` where that is a module, else to ``pkg`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the dotted name it is installed as (pyproject's package-dir): cli/ and stores/ live
# under the ``clipcache`` namespace so that they cannot collide with other packages' top-level names
PACKAGES = {"cli": "clipcache.cli", "cachekit": "cachekit", "stores": "clipcache.stores"}
METHOD_SHARED = {"base", "__init__"}

# Violations in files other branches are editing now; the lead removes them after merging. The
# test fails when one of these no longer occurs, so an entry is deleted the moment it is fixed.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_METHOD_IMPORTS: set[tuple[str, str]] = set()
KNOWN_LAYER_IMPORTS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the project's packages."""
    out = {}
    for folder, dotted in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [*dotted.split("."), *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node that can run (skips ``if TYPE_CHECKING:`` bodies)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The project modules (and external top-level names, for the click rule) one statement imports."""
    found = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            # `import a.b.c` binds a and runs a, a.b, a.b.c; the deepest project module is the edge
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in modules:
                    found.add(".".join(parts[:i]))
                    break
            else:
                found.add(parts[0])
        return found
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module
    for alias in node.names:
        sub = f"{mod}.{alias.name}"
        if sub in modules:
            found.add(sub)
        elif mod in modules:
            found.add(mod)
        else:
            found.add(mod.split(".")[0])
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (plus external top-level names)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps = set()
        for node in _imports(tree):
            deps |= _targets(name, path, node, modules)
        deps.discard(name)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], set()
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start] & graph.keys())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & graph.keys()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.add(frozenset(comp))
    return out


def _layer(name: str) -> str:
    """The layer (cli, cachekit, stores) of a dotted module name, else its top-level name."""
    for folder, dotted in PACKAGES.items():
        if name == dotted or name.startswith(dotted + "."):
            return folder
    return name.split(".")[0]


def _is_method(name: str) -> bool:
    parts = name.split(".")
    return parts[:2] == ["cachekit", "methods"] and len(parts) == 3 and parts[2] not in METHOD_SHARED


def test_the_graph_sees_the_known_edges():
    """The parser finds what is plainly there, so the rules below cannot pass by finding nothing."""
    graph = _graph()
    assert "cachekit.index.query" in graph and "cachekit.index.build" in graph["cachekit.index.query"]
    assert "cachekit.index.faiss_index" in graph["cachekit.index.build"]
    assert "clipcache.stores.base" in graph["cachekit.index.faiss_index"]
    assert "cachekit.evaluate" in graph["cachekit.index.build"]  # a function-level import
    assert "cachekit.protocols" in graph["cachekit.evaluate"]  # the package __init__ (PROTOCOLS)
    assert "cachekit.protocols.base" in graph["cachekit.protocols"]  # what the __init__ imports
    assert any(_is_method(m) for m in graph) and not _is_method("cachekit.methods.base")
    # a made-up cycle is found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_no_import_cycles():
    found = _cycles(_graph())
    new = sorted(sorted(c) for c in found - KNOWN_CYCLES)
    stale = sorted(sorted(c) for c in KNOWN_CYCLES - found)
    assert not new, f"import cycles: {new}"
    assert not stale, f"KNOWN_CYCLES entries no longer occur; delete them: {stale}"


def test_layers_go_cli_cachekit_stores():
    graph = _graph()
    found = set()
    for src, deps in graph.items():
        for dst in deps:
            if _layer(src) == "stores" and _layer(dst) in ("cachekit", "cli"):
                found.add((src, dst))
            if _layer(src) == "cachekit" and _layer(dst) in ("cli", "click"):
                found.add((src, dst))
    new = sorted(found - KNOWN_LAYER_IMPORTS)
    stale = sorted(KNOWN_LAYER_IMPORTS - found)
    assert not new, f"imports against cli -> cachekit -> stores: {new}"
    assert not stale, f"KNOWN_LAYER_IMPORTS entries no longer occur; delete them: {stale}"


def test_no_method_imports_another_method():
    graph = _graph()
    found = {(src, dst) for src, deps in graph.items() if _is_method(src)
             for dst in deps if _is_method(dst) and dst != src}
    new = sorted(found - KNOWN_METHOD_IMPORTS)
    stale = sorted(KNOWN_METHOD_IMPORTS - found)
    assert not new, f"method modules importing other method modules: {new}"
    assert not stale, f"KNOWN_METHOD_IMPORTS entries no longer occur; delete them: {stale}"


# --------------------------------------------------------------------------- protocol names
def _protocol_names() -> set[str]:
    """The registered protocol names: the keys of ``PROTOCOLS`` in cachekit/protocols/__init__.py."""
    tree = ast.parse((ROOT / "cachekit" / "protocols" / "__init__.py").read_text())
    for node in ast.walk(tree):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "PROTOCOLS" and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return set()


def _name_comparisons(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison (``==``, ``!=``, ``in``, ...) with a protocol name constant,
    alone or inside a tuple / list / set literal on either side."""
    def constants(node: ast.expr):
        if isinstance(node, ast.Constant) and node.value in names:
            yield node.value
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for elt in node.elts:
                yield from constants(elt)

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                out += [(node.lineno, n) for n in constants(side)]
    return out


def test_no_protocol_name_compared_outside_protocols():
    """A caller asks the protocol (its declared traits), never its name: only cachekit/protocols/
    may compare against a registered protocol name."""
    names = _protocol_names()
    assert {"episodic", "allway", "zeroshot", "base2novel"} <= names
    # the scan finds what is plainly there, so the rule cannot pass by finding nothing
    sample = ast.parse('a = p == "episodic"\nb = q in ("zeroshot", "x")\nc = "allway" != r\nd = p == "other"')
    assert sorted(_name_comparisons(sample, names)) == [(1, "episodic"), (2, "zeroshot"), (3, "allway")]
    found = []
    for folder in ("cachekit", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "cachekit" / "protocols"):
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            found += [f"{path.relative_to(ROOT)}:{line} compares {name!r}" for line, name in _name_comparisons(tree, names)]
    assert not found, "protocol names compared outside cachekit/protocols/ (declare a trait on Protocol):\n" + \
        "\n".join(found)


# --------------------------------------------------------------------------- store group names
#: the store methods whose first argument is a group name
_GROUP_METHODS = {"commit", "commit_many", "keys", "has", "record", "records", "read", "read_column", "field",
                  "array_shapes", "verify", "duplicates", "put_json", "get_json", "json_keys", "delete_json"}


def _group_names_used(tree: ast.AST) -> set[str]:
    """String constants passed as the first argument of a store call (``store.keys("videos")``)."""
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in _GROUP_METHODS and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of every string constant but docstrings (prose may say what a caller stores)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_stores_know_no_group_name_of_clipcache():
    """``stores`` holds any caller's groups: the names cachekit and cli give their groups
    (``videos``, ``text``, ``splits``...) never occur in stores/ code; what is special about a
    group (which are packed) is the caller's word when it creates a store."""
    names = set()
    for folder in ("cachekit", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            names |= _group_names_used(ast.parse(path.read_text(), filename=str(path)))
    assert {"videos", "text", "splits", "failed"} <= names
    # the scans find what is plainly there, so the rule cannot pass by finding nothing
    sample = ast.parse('"""videos"""\ndef f(s):\n    "text"\n    return s.keys("videos"), ("text",)')
    assert _group_names_used(sample) == {"videos"}
    assert [(line, v) for line, v in _string_constants(sample) if v in names] == [(4, "videos"), (4, "text")]
    found = []
    for path in sorted((ROOT / "stores").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(ROOT)}:{line} {value!r}" for line, value in _string_constants(tree)
                  if value in names]
    assert not found, "cachekit's group names in stores/ (let the caller say it):\n" + "\n".join(found)


def test_every_name_the_benchmarks_and_examples_import_from_the_project_exists():
    """The benchmark scripts and examples import from the library lazily, inside functions that the
    test suite does not run at full size; a name that a refactor moved (``transfer.py`` once asked
    ``cachekit.protocols.base`` for a function that had moved to ``.plan``) fails here, not after
    a ten-minute run."""
    import importlib

    missing = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "examples").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in ("cachekit", "clipcache")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, missing
