"""Distillation data (docs/method.md section 4): per image, the student view, the teacher views, a random grid of
regions and the CLIP teacher's crops of those regions.

Per sample (uint8 tensors; normalisation happens on the device, in ``DistillDataPreprocessor``):

    student  (3, S, S)        longest side resized to S (bicubic), padded right/bottom with black
    vfm      (3, Sv, Sv)      the same geometry at Sv = (S / student_patch) * vfm_patch
    sd       (3, Ssd, Ssd)    the same geometry for the diffusion teacher (only if sd_size is set)
    boxes    (K, 4)           xyxy in student-view pixels, K <= max_regions grid cells
    crops    (K, 3, c, c)     each cell cut from the ORIGINAL image, longest side resized to c, centre-padded
    vfm_labels (Sv, Sv)       int64 label map in the VFM view's geometry (nearest), padding = ``ignore_index``
                              (only with ``label_dir``: for teachers that read labels, e.g. an oracle)

The grid (rows m, cols n) is drawn uniformly from the 24 pairs m in 1..6, n in ceil(m/2)..min(2m, 6); its
m*n cells are shuffled and at most ``max_regions`` kept. The draw depends only on (seed, epoch, index), so
runs are identical whatever the number of processes or workers, and after a resume.

Unreadable or corrupt images are skipped (the next readable image is used instead), logged once each and
counted in the sample's ``skipped`` field, which the distiller logs as ``data_skipped``.
"""
import hashlib
import json
import logging
import math
from io import BytesIO
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..registry import DATASETS, FUNCTIONS

logger = logging.getLogger('declip_mm')

GRID_PAIRS = tuple((m, n) for m in range(1, 7) for n in range(math.ceil(m / 2), min(2 * m, 6) + 1))
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def resize_and_pad(image: Image.Image, size: int, centre: bool = False) -> torch.Tensor:
    """Resize the longest side to ``size`` (bicubic) and pad to size x size with black -> uint8 (3, size, size)."""
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((new_w, new_h), Image.BICUBIC)
    canvas = Image.new('RGB', (size, size))
    offset = ((size - new_w) // 2, (size - new_h) // 2) if centre else (0, 0)
    canvas.paste(resized, offset)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def grid_boxes(rng: np.random.Generator, width: float, height: float, max_regions: int) -> np.ndarray:
    """A random grid over a width x height area: (K, 4) xyxy boxes, K = min(m*n, max_regions), shuffled."""
    m, n = GRID_PAIRS[rng.integers(len(GRID_PAIRS))]
    ys, xs = np.linspace(0, height, m + 1), np.linspace(0, width, n + 1)
    boxes = np.array([[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(m) for j in range(n)], dtype=np.float32)
    return boxes[rng.permutation(len(boxes))[:max_regions]]


@DATASETS.register_module()
class DeCLIPDistillDataset(torch.utils.data.Dataset):
    """Images from a folder (recursively) or a COCO json (its labels unused), turned into distillation samples.

    Args:
        img_dir: folder of images (with ``ann_file``: the folder the json's file names are relative to).
        ann_file: optional COCO-style json; its ``images[*].file_name`` are used.
        student_size: S, the student input side (560 for B/16 in the paper).
        student_patch / vfm_patch: patch sizes; the VFM view is (S / student_patch) * vfm_patch pixels.
        crop_size: teacher crop side (224; 336 for L/14-336).
        sd_size: diffusion teacher input side (e.g. 512); None = no diffusion view.
        max_regions: at most this many grid cells per image (20).
        seed: base seed of the grid draws.
        label_dir: optional folder of label maps (8- or 16-bit PNGs, one value per pixel) at the same relative
            paths as the images with ``label_suffix``; each sample then carries ``vfm_labels``. Only a teacher
            that reads labels uses them (the proof world's oracle); the paper's distillation is label-free.
        label_suffix: file suffix of the label maps ('.png').
        ignore_index: the label of padding pixels (255).
    """

    def __init__(self, img_dir: str, ann_file: Optional[str] = None, student_size: int = 560, student_patch: int = 16,
                 vfm_patch: int = 14, crop_size: int = 224, sd_size: Optional[int] = None, max_regions: int = 20,
                 seed: int = 0, data_root: Optional[str] = None, label_dir: Optional[str] = None,
                 label_suffix: str = '.png', ignore_index: int = 255):
        root = Path(data_root) if data_root else Path('.')
        self.img_dir = root / img_dir
        if student_size % student_patch:
            raise ValueError(f'student_size {student_size} is not a multiple of student_patch {student_patch}')
        self.files = self._list_files(root / ann_file if ann_file else None)
        if not self.files:
            raise FileNotFoundError(f'no images found in {self.img_dir}' + (f' for {ann_file}' if ann_file else ''))
        self.label_files = None
        if label_dir is not None:
            self.label_files = [(root / label_dir / f.relative_to(self.img_dir)).with_suffix(label_suffix)
                                for f in self.files]
            missing = [str(f) for f in self.label_files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f'{len(missing)} of {len(self.files)} label maps missing in {root / label_dir}, '
                                        f'first {missing[0]} (label_dir mirrors img_dir, suffix {label_suffix})')
        self.ignore_index = ignore_index
        self.student_size, self.crop_size, self.sd_size = student_size, crop_size, sd_size
        self.vfm_size = student_size // student_patch * vfm_patch
        self.max_regions, self.seed = max_regions, seed
        self.epoch = 0
        self._reported = set()
        self.metainfo = dict(task='DeCLIP distillation', images=len(self.files))

    def _list_files(self, ann_file: Optional[Path]) -> List[Path]:
        if ann_file is not None:
            if not ann_file.is_file():
                raise FileNotFoundError(f'annotation file not found: {ann_file}')
            with open(ann_file) as f:
                images = json.load(f).get('images')
            if not isinstance(images, list):
                raise ValueError(f"{ann_file} has no 'images' list (expected a COCO-style json)")
            return [self.img_dir / img['file_name'] for img in sorted(images, key=lambda i: i['id'])]
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f'image folder not found: {self.img_dir}')
        return sorted(p for p in self.img_dir.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)

    def set_epoch(self, epoch: int) -> None:
        """Called by DeCLIPDistillHook before each epoch: the grid draws depend on it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path):
        """(RGB image, sha256 of the file) or None when the file cannot be decoded."""
        try:
            data = path.read_bytes()
            image = Image.open(BytesIO(data))
            image.load()
            image = image.convert('RGB')
            if min(image.size) < 1:
                raise ValueError('empty image')
            return image, hashlib.sha256(data).hexdigest()
        except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
            if path not in self._reported:
                self._reported.add(path)
                logger.warning('skipping unreadable image %s (%s: %s)', path, type(err).__name__, err)
            return None

    def __getitem__(self, index: int) -> Dict:
        for skipped in range(len(self.files)):
            i = (index + skipped) % len(self.files)
            read = self._read(self.files[i])
            if read is not None:
                return self._sample(i, *read, skipped=skipped)
        raise RuntimeError(f'none of the {len(self.files)} images in {self.img_dir} can be read')

    def _sample(self, index: int, image: Image.Image, key: str, skipped: int) -> Dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        w, h = image.size
        scale = self.student_size / max(w, h)
        boxes = grid_boxes(rng, round(w * scale), round(h * scale), self.max_regions)
        crops = []
        for x0, y0, x1, y1 in boxes / scale:
            left, top = int(math.floor(x0)), int(math.floor(y0))
            right, bottom = max(int(math.ceil(x1)), left + 1), max(int(math.ceil(y1)), top + 1)
            crops.append(resize_and_pad(image.crop((left, top, min(right, w), min(bottom, h))), self.crop_size,
                                        centre=True))
        sample = dict(student=resize_and_pad(image, self.student_size), vfm=resize_and_pad(image, self.vfm_size),
                      boxes=torch.from_numpy(boxes), crops=torch.stack(crops), key=key, index=index, skipped=skipped,
                      img_path=str(self.files[index]))
        if self.sd_size:
            sample['sd'] = resize_and_pad(image, self.sd_size)
        if self.label_files is not None:
            sample['vfm_labels'] = self._labels(index, image.size)
        return sample

    def _labels(self, index: int, image_size) -> torch.Tensor:
        """The label map of image ``index`` in the VFM view's geometry: (Sv, Sv) int64, nearest resampling of the
        pixel centres, padded right / bottom with ``ignore_index``."""
        path = self.label_files[index]
        labels = np.asarray(Image.open(path))
        if labels.ndim != 2:
            raise ValueError(f'label map {path} has shape {labels.shape}; expected one value per pixel (H, W)')
        h, w = labels.shape
        if (w, h) != tuple(image_size):
            raise ValueError(f'label map {path} is {w}x{h}, its image {self.files[index]} is '
                             f'{image_size[0]}x{image_size[1]}')
        size = self.vfm_size
        scale = size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        ys = np.minimum(((np.arange(new_h) + 0.5) * h / new_h).astype(np.int64), h - 1)
        xs = np.minimum(((np.arange(new_w) + 0.5) * w / new_w).astype(np.int64), w - 1)
        out = np.full((size, size), self.ignore_index, dtype=np.int64)
        out[:new_h, :new_w] = labels.astype(np.int64)[ys][:, xs]
        return torch.from_numpy(out)


@FUNCTIONS.register_module()
def declip_distill_collate(samples: Sequence[Dict]) -> Dict:
    """Stack the views, keep per-image boxes, concatenate the crops (with per-image counts)."""
    batch = dict(student=torch.stack([s['student'] for s in samples]),
                 vfm=torch.stack([s['vfm'] for s in samples]),
                 boxes=[s['boxes'] for s in samples],
                 crops=torch.cat([s['crops'] for s in samples]),
                 keys=[s['key'] for s in samples],
                 skipped=torch.tensor([s['skipped'] for s in samples]))
    for view in ('sd', 'vfm_labels'):
        if view in samples[0]:
            batch[view] = torch.stack([s[view] for s in samples])
    return dict(inputs=batch)
