"""Where the proof's pretrained towers are kept: ``<cache>/<key>/``, the key a content hash of what made them.

``<cache>`` is the ``cache_dir`` argument, else ``$DECLIP_PROOF_CACHE``, else ``$DECLIP_CACHE/proof``, else
``~/.cache/declip-mm/proof``. The key hashes the world's parameters (its stamp, with ``WORLD_VERSION``), the recipe
(every argument that changes the weights, the model config included) and the code version: the training code's
own version (``CLIP_TRAINING_VERSION`` in pretrain.py, ``VFM_TRAINING_VERSION`` in vfm_pretrain.py, bumped with
any change that alters the weights) and the torch / open_clip / timm versions. Reports and probes are not in the
key: editing them does not retrain.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch

from .world import read_world_params


def proof_cache_dir(cache_dir: Optional[str] = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get('DECLIP_PROOF_CACHE'):
        return Path(os.environ['DECLIP_PROOF_CACHE']).expanduser()
    return Path(os.environ.get('DECLIP_CACHE', Path.home() / '.cache' / 'declip-mm')).expanduser() / 'proof'


def default_world_root(n_train: int, n_val: int, size: int, seed: int, cache_dir: Optional[str] = None) -> Path:
    """Where the tools put a world when no folder is given: ``<cache>/world-<n_train>-<n_val>-<size>-seed<seed>``."""
    return proof_cache_dir(cache_dir) / f'world-{n_train}-{n_val}-{size}-seed{seed}'


def code_version(training_version: int) -> Dict[str, str]:
    """What, besides the world and the recipe, decides the trained weights."""
    import open_clip
    import timm
    return dict(training=str(training_version), torch=torch.__version__, open_clip=open_clip.__version__,
                timm=timm.__version__)


def cache_key(kind: str, world_params: Dict, recipe: Dict, training_version: int) -> str:
    blob = json.dumps(dict(kind=kind, world=world_params, recipe=recipe, code=code_version(training_version)),
                      sort_keys=True)
    return f'{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}'


def read_report(weights_path) -> Dict:
    """The json report saved next to a pretrained weights file (``clip.pt`` -> ``clip.json``)."""
    report = Path(weights_path).with_suffix('.json')
    if not report.is_file():
        raise FileNotFoundError(f'no report {report} next to {weights_path}')
    return json.loads(report.read_text())


def cached_paths(kind: str, world_root, recipe: Dict, training_version: int, cache_dir, out_path, file_name: str):
    """(cached weights path, out path or None, whether the cache holds it)."""
    key = cache_key(kind, read_world_params(world_root), recipe, training_version)
    path = proof_cache_dir(cache_dir) / key / file_name
    return path, (Path(out_path) if out_path else None), path.is_file() and path.with_suffix('.json').is_file()


def publish(path: Path, out_path: Optional[Path]) -> Path:
    """Copy the cached weights and report to ``out_path`` when one is asked for; return where they are."""
    if out_path is None or out_path.resolve() == path.resolve():
        return path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out_path)
    shutil.copyfile(path.with_suffix('.json'), out_path.with_suffix('.json'))
    return out_path


def save_with_report(path: Path, state_dict: Dict, report: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    torch.save(state_dict, tmp)
    tmp.replace(path)
    path.with_suffix('.json').write_text(json.dumps(report, indent=1))
