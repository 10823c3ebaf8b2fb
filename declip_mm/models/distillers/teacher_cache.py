"""On-disk cache of teacher targets (VFM tokens, SD attention) per image, keyed by image content and teacher.

The teachers are frozen and their views are deterministic functions of the image (resize + pad; the SD
noise seed is fixed), so a target computed once can be reused in every epoch. The teacher key covers
everything else that shapes a target: the teacher's config, the normalisation of its view, and the CONTENT
of its weight files (sha256 over the bytes; a folder's files in sorted order), so replacing a weights file
in place, or a folder's file, can never serve stale targets. Each entry's key adds the view's size (and, for
SD, the grid its attention is resized to) to the image's sha256. Entries are stored in fp16 as
``<root>/<teacher key>/<image sha256[:2]>/<image sha256>-<view signature>.pt``. A cached VFM-B/14 target at 490 px is
about 1.9 MB per image (35 x 35 x 768 fp16): budget the disk before enabling it on a large dataset.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, List, Sequence

import torch


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names and values): the identity of a teacher without a weights file
    (random weights, e.g. in tests), so two differently initialised teachers never share cached targets."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return 'state:' + digest.hexdigest()


def weights_digest(path) -> str:
    """sha256 of the bytes of a weights file, or of every file under a folder (relative names and bytes, in
    sorted order); 'random' for None. Reads the weights once (seconds for GBs), at cache construction."""
    if path is None:
        return 'random'
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f'teacher weights not found: {path}')
    files = [root] if root.is_file() else sorted(p for p in root.rglob('*') if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode() if file != root else b'')
        with open(file, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 24), b''):
                digest.update(chunk)
    return digest.hexdigest()


class TeacherCache:
    """Per-image cache for one teacher configuration, described by ``teacher`` (any JSON-able dict)."""

    def __init__(self, root: str, teacher: dict):
        key = hashlib.sha256(json.dumps(teacher, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.root = Path(root) / key
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / 'teacher.json', 'w') as f:
            json.dump(teacher, f, indent=1, sort_keys=True, default=str)
        self.hits = self.misses = 0

    def _path(self, image_key: str) -> Path:
        return self.root / image_key[:2] / f'{image_key}.pt'

    def get_or_compute(self, image_keys: Sequence[str], compute: Callable[[List[int]], torch.Tensor],
                       device) -> torch.Tensor:
        """Targets for a batch: cached rows are read, the others computed in one call of ``compute(indices)``
        (which returns a (len(indices), ...) tensor) and written. Returns a float32 (B, ...) tensor."""
        rows = [None] * len(image_keys)
        for i, key in enumerate(image_keys):
            path = self._path(key)
            if path.is_file():
                rows[i] = torch.load(path, map_location=device, weights_only=True)
        missing = [i for i, r in enumerate(rows) if r is None]
        self.hits += len(image_keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(missing)
            for i, value in zip(missing, computed):
                rows[i] = value.to(torch.float16)
                path = self._path(image_keys[i])
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f'.tmp{os.getpid()}')
                torch.save(rows[i].cpu().clone(), tmp)
                tmp.replace(path)
        return torch.stack([r.to(device) for r in rows]).float()
