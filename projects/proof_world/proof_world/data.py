"""A written world's split in memory, for pretraining and probes: the world is small (a few thousand 128 px scenes)."""
import json
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from PIL import Image

from .world import CLASS_NAMES, read_world_params


class WorldSplit(NamedTuple):
    """images uint8 (N, 3, H, W), labels uint8 (N, H, W), captions (N,), box_labels (N,) lists of label ids,
    boxes (N,) lists of xyxy thing boxes."""
    images: torch.Tensor
    labels: torch.Tensor
    captions: List[str]
    box_labels: List[List[int]]
    boxes: List[List[List[float]]]


def load_split(world_root, split: str, limit: Optional[int] = None) -> WorldSplit:
    """Read the first ``limit`` (all when None) scenes of ``split`` of the world at ``world_root``."""
    root = Path(world_root)
    read_world_params(root)     # a clear error when root is not a world
    ann_file = root / split / 'annotations.json'
    if not ann_file.is_file():
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    annotations = json.loads(ann_file.read_text())
    if annotations.get('classes') != list(CLASS_NAMES):
        raise ValueError(f'{ann_file} was written with other classes; rewrite the world')
    records = annotations['images'][:limit]
    images = np.stack([np.asarray(Image.open(root / split / r['file_name']).convert('RGB')) for r in records])
    labels = np.stack([np.asarray(Image.open(root / split / r['label_file'])) for r in records])
    return WorldSplit(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                      [r['caption'] for r in records], [list(r['box_labels']) for r in records],
                      [list(r['boxes']) for r in records])
