"""The package's shape, read from its imports (docs/architecture.md): layers import downwards only, modules import
each other without cycles, the proof-of-mechanism project stays out of ``import declip_mm``, no tool imports tests."""
import ast
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'declip_mm'
# registry/utils/constants/vocabularies -> models/engine -> evaluation/datasets/deploy -> apis -> cli (the package
# __init__ imports everything)
LAYERS = {'registry': 0, 'utils': 0, 'constants': 0, 'vocabularies': 0, 'models': 1, 'engine': 1, 'evaluation': 2,
          'datasets': 2, 'deploy': 2, 'apis': 3, 'cli': 4, '__main__': 4}
# upward imports still to be removed; none may be added
KNOWN_UPWARD = set()
# tools that still import test code (the benchmark times the authors' loop as tests/reference re-implements it)
KNOWN_TEST_IMPORTS = set()  # none left: the authors' loop it timed lives in tools/benchmarks/authors_loop.py


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path, top_level_only: bool = False):
    """(imported module name, line) of every ``declip_mm`` import in ``path`` (relative ones resolved)."""
    name = module_name(path)
    package = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = '.'.join(base + ([node.module] if node.module else []))
            if node.level and not node.module:
                for alias in node.names:
                    yield f'{target}.{alias.name}', node.lineno
            else:
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def find_cycle(graph: dict):
    """The first cycle (a list of modules, first = last) in ``graph`` {module: imported modules}, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in graph[node]:
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 'done'
        return None
    for node in graph:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_layers_import_downwards_only():
    upward = set()
    for path in PACKAGE.rglob('*.py'):
        source = module_name(path)
        layer = source.split('.')[1] if '.' in source else None
        if layer is None:
            continue
        for target, line in imports_of(path):
            parts = target.split('.')
            if parts[0] != 'declip_mm' or len(parts) < 2 or parts[1] == layer:
                continue
            if LAYERS.get(parts[1], 9) > LAYERS.get(layer, 9):
                upward.add((source, '.'.join(parts[:2])))
    assert upward <= KNOWN_UPWARD, upward - KNOWN_UPWARD


def test_module_level_imports_have_no_cycle():
    graph = {}
    modules = {module_name(p): p for p in PACKAGE.rglob('*.py')}
    for name, path in modules.items():
        graph[name] = {t for t, _ in imports_of(path, top_level_only=True) if t in modules and t != name}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_importing_the_package_does_not_import_the_proof_project():
    code = "import declip_mm, sys; print([m for m in sys.modules if 'proof' in m])"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == '[]'


def test_no_tool_or_library_module_imports_the_tests():
    offenders = []
    for path in list((REPO / 'tools').rglob('*.py')) + list(PACKAGE.rglob('*.py')) + \
            list((REPO / 'projects').glob('*/[!t]*/**/*.py')):
        for target, line in imports_of(path):
            if target.split('.')[0] in ('tests', 'reference', 'conftest') or target.startswith('test_'):
                if str(path.relative_to(REPO)) not in KNOWN_TEST_IMPORTS:
                    offenders.append(f'{path.relative_to(REPO)}:{line} imports {target}')
    assert not offenders, offenders
