"""Checkpoint reading, in one place, safe by default.

Every checkpoint or weights file this package reads goes through :func:`load_checkpoint`:

* ``.safetensors`` files are read by safetensors (tensors only, no code);
* PyTorch files are read with ``torch.load(weights_only=True)`` plus an allow-list of exactly the non-tensor types
  an mmengine Runner checkpoint holds (:data:`ALLOWED_GLOBALS`: the message hub's ``HistoryBuffer`` and the
  lookup of its statistics methods, numpy arrays, scalars and dtypes). Unpickling those cannot run code;
* a file that needs any other Python object is refused with :class:`UntrustedCheckpointError`, which names the file,
  the disallowed types and the explicit opt-in for files you trust: ``--trust-checkpoint`` on ``declip-mm``,
  ``tools/train.py`` and ``tools/test.py``, ``DECLIP_TRUST_CHECKPOINTS=1`` in the environment, or ``trust=True``.
  There is never an automatic fallback to a full unpickle.

Importing ``declip_mm`` registers :func:`load_checkpoint` as mmengine's loader for local paths (``CheckpointLoader``
scheme ``''``), so ``Runner.load_checkpoint``, ``--resume`` and ``load_from`` are safe too.
Files that are not checkpoints at all (empty, text, truncated) raise :class:`CheckpointError` saying which.
"""
import os
import os.path as osp
import pickle
import zipfile
from typing import List, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from ..constants import FOLDER_WEIGHTS_FILES

TRUST_ENV = 'DECLIP_TRUST_CHECKPOINTS'


class CheckpointError(ValueError):
    """A file that cannot be read as a checkpoint (empty, not a PyTorch file, truncated); the message names it."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that holds Python objects outside :data:`ALLOWED_GLOBALS` (loading it could run code)."""

    def __init__(self, filename: str, disallowed: List[str]):
        self.filename, self.disallowed = filename, disallowed
        shown = ', '.join(disallowed[:6]) + (f' (+{len(disallowed) - 6} more)' if len(disallowed) > 6 else '')
        super().__init__(
            f'{filename} holds Python objects of types that are not allowed in a checkpoint ({shown or "unknown"}); '
            'unpickling them could run code, so it was not loaded. If you trust the file, pass --trust-checkpoint '
            f'(or set {TRUST_ENV}=1, or call load_checkpoint(..., trust=True))')


def _history_buffer_method(owner, name: str):
    """Stands in for ``builtins.getattr`` while unpickling: a HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``. Only those lookups are answered; any other getattr is refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and name in {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'Unsupported global: getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def _allowed_globals() -> list:
    """The non-tensor types of an mmengine Runner checkpoint: numpy arrays / scalars / dtypes (the message hub's
    logged values) and mmengine's HistoryBuffer with its statistics methods (:func:`_history_buffer_method`)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:                                                            # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGUSV' if hasattr(np, 'dtypes')]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtype_classes,
            (_history_buffer_method, 'builtins.getattr')]


ALLOWED_GLOBALS = _allowed_globals()


def trust_from_env() -> bool:
    """True when ``DECLIP_TRUST_CHECKPOINTS`` is set to 1/true/yes (the command lines' ``--trust-checkpoint``)."""
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes')


def folder_weights_file(filename: str) -> str:
    """``filename`` itself, or for a folder (open_clip's Hugging Face layout, a Hub cache snapshot) the weights file
    in it (:data:`FOLDER_WEIGHTS_FILES`, first found); ``FileNotFoundError`` naming the folder when it has none."""
    if not osp.isdir(filename):
        return filename
    inside = next((osp.join(filename, n) for n in FOLDER_WEIGHTS_FILES if osp.isfile(osp.join(filename, n))), None)
    if inside is None:
        raise FileNotFoundError(f"no weights file ({', '.join(FOLDER_WEIGHTS_FILES)}) in folder {filename}")
    return inside


def check_checkpoint_file(filename: str) -> None:
    """Errors for what is not a readable PyTorch file (missing, empty, text, truncated zip), before unpickling
    anything: cheap enough to run before any model is built."""
    filename = folder_weights_file(osp.expanduser(str(filename)))
    if filename.endswith('.safetensors'):
        if not osp.isfile(filename):
            raise FileNotFoundError(f'weights file not found: {filename}')
        return
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    size = osp.getsize(filename)
    if size == 0:
        raise CheckpointError(f'{filename} is empty (0 bytes): not a checkpoint')
    with open(filename, 'rb') as f:
        head = f.read(8)
    if head[:2] == b'PK':
        if not zipfile.is_zipfile(filename):
            raise CheckpointError(f'{filename} is a truncated or corrupt PyTorch checkpoint (its zip archive is '
                                  f'incomplete; {size} bytes)')
        return
    if head[:1] != b'\x80':                                         # pickle protocol 2+: a legacy torch file
        raise CheckpointError(f'{filename} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle; '
                              f'it starts with {head!r})')


def _disallowed(filename: str) -> List[str]:
    allowed = {g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}' for g in ALLOWED_GLOBALS}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:                                               # legacy format: not listed by torch
        return []
    return [name for name in found if name not in allowed]


def load_checkpoint(filename, map_location='cpu', trust: Optional[bool] = None, mmap: bool = False):
    """Read a checkpoint or weights file safely (module doc). ``trust=None`` follows ``DECLIP_TRUST_CHECKPOINTS``.
    ``mmap=True`` memory-maps the tensors of a torch zip file instead of reading them (a look at its metadata costs
    only the pickled header; other files are read whole), with the same safety rules.

    Returns the loaded object (a dict for every checkpoint). Raises ``FileNotFoundError``,
    :class:`CheckpointError` (not a checkpoint) or :class:`UntrustedCheckpointError`, each naming the file.
    """
    filename = folder_weights_file(osp.expanduser(str(filename)))   # a folder: its weights file (state dict only)
    if filename.endswith('.safetensors'):
        if not osp.isfile(filename):
            raise FileNotFoundError(f'weights file not found: {filename}')
        from safetensors.torch import load_file
        try:
            return load_file(filename, device=str(map_location))
        except Exception as err:
            raise CheckpointError(f'{filename} is not a readable safetensors file ({err})') from None
    check_checkpoint_file(filename)
    trust = trust_from_env() if trust is None else trust
    # only a torch zip archive can be memory-mapped; otherwise torch's own default applies
    extra = {'mmap': True} if mmap and zipfile.is_zipfile(filename) else {}
    if trust:
        return torch.load(filename, map_location=map_location, weights_only=False, **extra)
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True, **extra)
    except pickle.UnpicklingError as err:
        disallowed = _disallowed(filename)
        if disallowed or 'Unsupported global' in str(err) or 'Unsupported operand' in str(err):
            raise UntrustedCheckpointError(filename, disallowed) from None
        raise CheckpointError(f'{filename} is not a readable PyTorch checkpoint ({str(err).splitlines()[0]})') from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(f'{filename} is a truncated or corrupt PyTorch checkpoint ({str(err).splitlines()[0]})'
                              ) from None


def _mmengine_loader(filename, map_location='cpu'):
    return load_checkpoint(filename, map_location)


CheckpointLoader.register_scheme(prefixes='', loader=_mmengine_loader, force=True)

# Former names, kept for users' scripts: both are the safe loader now.
load_weights_file = load_checkpoint


def load_trusted_checkpoint(filename, map_location='cpu'):
    """A full unpickle, for a file you trust (the explicit opt-in; never called by the package on its own)."""
    return load_checkpoint(filename, map_location, trust=True)
