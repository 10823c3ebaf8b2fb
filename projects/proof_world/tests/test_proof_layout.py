"""The project's modules import each other without cycles, even through the imports made inside functions, and
reach the library only through its public packages."""
from pathlib import Path

from test_architecture import imports_of

PACKAGE = Path(__file__).resolve().parents[1] / 'proof_world'
NAME = 'projects.proof_world.proof_world'


def test_the_project_modules_import_each_other_without_cycles():
    modules = {f'{NAME}.{p.stem}': p for p in PACKAGE.glob('*.py') if p.stem != '__init__'}
    graph = {name: {t for t, _ in imports_of(path) if t in modules and t != name} for name, path in modules.items()}
    # imports_of resolves relative imports from the module's own dotted name, which is the project's
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in graph[node]:
            assert state.get(nxt) != 'open', ' -> '.join(stack[stack.index(nxt):] + [nxt])
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 'done'
    for node in graph:
        if node not in state:
            visit(node, [node])
    assert graph[f'{NAME}.vfm_pretrain'] and f'{NAME}.pretrain' not in graph[f'{NAME}.vfm_pretrain']
