"""declip-mm: DeCLIP decoupled CLIP dense features for OpenMMLab (mmengine, mmdet, mmseg).

Importing the package registers every module in the ``declip_mm`` registry scope (and, by bare name, in
the root registries mmdet and mmseg configs resolve through), and makes mmengine read local checkpoints
through the package's safe loader (``weights_only=True`` and an allow-list; ``declip_mm/utils/checkpoint_io.py``):
``custom_imports = dict(imports=['declip_mm'])`` in an mmdet / mmseg config is all it takes.

One exception keeps the command line quick: when Python loads the package only to run the ``declip-mm`` command
(the console script, or ``python -m declip_mm``), nothing heavy is imported while the command parses and checks
its arguments (``--help`` and usage errors answer in a fraction of a second instead of the ~8 s torch, mmdet and
mmseg take to import). The command registers everything (:func:`register_all_modules`) before it builds a model:
its first use of a model API (``declip_mm.apis.OpenVocabSegmenter``, ...) does.
"""
import importlib
import re
import sys
from pathlib import Path

__version__ = '0.1.0'

SUBPACKAGES = ('utils', 'registry', 'apis', 'datasets', 'engine', 'evaluation', 'models')
COMMAND = 'declip-mm'
_registered = False


def register_all_modules() -> None:
    """Import every module, registering it (the checkpoint loader first): what ``import declip_mm`` does. Runs once;
    the ``declip-mm`` command calls it (through the APIs) when it is about to build a model."""
    global _registered
    if _registered:
        return
    from . import utils  # noqa: F401  (checkpoint loader first)
    from . import registry  # noqa: F401
    from . import apis, datasets, engine, evaluation, models  # noqa: F401
    _registered = True


def _python_m_target(argv) -> str:
    """The module of ``python ... -m MODULE ...`` in the interpreter's own command line ('' without one)."""
    for i, arg in enumerate(argv[1:], 1):
        if arg == '-m':
            return argv[i + 1] if i + 1 < len(argv) else ''
        if arg.startswith('-m') and not arg.startswith('--'):
            return arg[2:]
    return ''


def loaded_to_run_the_command() -> bool:
    """True while Python imports this package only to run ``declip-mm``: from its console script (``sys.argv[0]``
    is the script), or for ``python -m declip_mm`` (runpy imports the package before its ``__main__``, with
    ``sys.argv[0]`` still '-m')."""
    argv0 = sys.argv[0] if sys.argv else ''
    if argv0 == '-m':
        return _python_m_target(getattr(sys, 'orig_argv', ())) == __name__
    return re.sub(r'(-script\.pyw?|\.exe)$', '', Path(argv0).name) == COMMAND


def __getattr__(name: str):
    """The subpackages, imported when first used (only ever needed where the command line left them unimported)."""
    if name in SUBPACKAGES:
        return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not loaded_to_run_the_command():
    register_all_modules()
