"""On-disk cache of teacher targets (VFM tokens, SD attention) per image, keyed by image content and teacher.

The teachers are frozen and their views are deterministic functions of the image (resize + pad; the SD
noise seed is fixed), so a target computed once can be reused in every epoch. Entries are stored in fp16
as ``<root>/<teacher key>/<image sha256[:2]>/<image sha256>.pt``. A cached VFM-B/14 target at 490 px is
about 1.9 MB per image (35 x 35 x 768 fp16): budget the disk before enabling it on a large dataset.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, List, Sequence

import torch


def file_identity(path) -> str:
    """Path, size and mtime of a weights file or folder (None -> 'random')."""
    if path is None:
        return 'random'
    stat = os.stat(path)
    return f'{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}'


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
