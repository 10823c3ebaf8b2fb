"""The project's modules import each other without cycles, even through the imports made inside functions, and
reach the library only through its public packages."""
from pathlib import Path

from test_architecture import find_cycle, imports_of

PACKAGE = Path(__file__).resolve().parents[1] / 'proof_world'
NAME = 'projects.proof_world.proof_world'


def test_the_project_modules_import_each_other_without_cycles():
    modules = {f'{NAME}.{p.stem}': p for p in PACKAGE.glob('*.py') if p.stem != '__init__'}
    graph = {name: {t for t, _ in imports_of(path) if t in modules and t != name} for name, path in modules.items()}
    cycle = find_cycle(graph)      # imports_of resolves relative imports from the module's own dotted name
    assert cycle is None, ' -> '.join(cycle)
    assert graph[f'{NAME}.vfm_pretrain'] and f'{NAME}.pretrain' not in graph[f'{NAME}.vfm_pretrain']
