"""detectron2's test-time ``ResizeShortestEdge`` as an mmcv transform (CAT-Seg's test mapper).

detectron2 @02b5c4e (``detectron2/data/transforms/augmentation_impl.py`` ``ResizeShortestEdge.get_output_shape``,
``transform.py`` ``ResizeTransform.apply_image``): the output size is the short side scaled to ``short_edge`` (the
long side capped at ``max_size``, both rounded with ``int(x + 0.5)``); a uint8 image is resized with PIL,
``Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR)``: PIL's bilinear filter widens its support by the
scale when shrinking, so downscaling is antialiased (cv2's ``INTER_LINEAR`` is not). Other dtypes go through
``F.interpolate(..., align_corners=False)`` there and here. Segmentation maps, when present, use nearest (PIL's for
uint8, ``F.interpolate(mode='nearest')`` otherwise), as ``ResizeTransform.apply_segmentation``.

``backend='cv2'`` keeps the same output size and resizes with ``cv2.resize`` (bilinear, nearest for labels): the
resize mmseg's ``Resize`` does. The resampling is per channel, so BGR and RGB images give the same pixels.
"""
import sys
from typing import Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from PIL import Image

from ...registry import TRANSFORMS

_PIL = {'bilinear': Image.BILINEAR, 'nearest': Image.NEAREST, 'bicubic': Image.BICUBIC}
_CV2 = {'bilinear': cv2.INTER_LINEAR, 'nearest': cv2.INTER_NEAREST, 'bicubic': cv2.INTER_CUBIC}


def d2_shortest_edge_shape(h: int, w: int, short_edge: int, max_size: int = sys.maxsize) -> Tuple[int, int]:
    """(new_h, new_w) as ``ResizeShortestEdge.get_output_shape``."""
    size = short_edge * 1.0
    scale = size / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def d2_resize_image(img: np.ndarray, new_h: int, new_w: int, interpolation: str = 'bilinear') -> np.ndarray:
    """``ResizeTransform.apply_image``: PIL for uint8 (H, W), (H, W, 1) or (H, W, C); F.interpolate otherwise."""
    if img.dtype == np.uint8:
        single = img.ndim > 2 and img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0], mode='L') if single else Image.fromarray(img)
        out = np.asarray(pil.resize((new_w, new_h), _PIL[interpolation]))
        return out[..., None] if single else out
    mode = interpolation
    dtype = img.dtype
    if np.issubdtype(dtype, np.integer):       # 16-bit labels: nearest through float64 is exact; torch has no uint16
        img = img.astype(np.float64)
    t = torch.from_numpy(np.ascontiguousarray(img))
    shape = list(t.shape)
    t = t.view(shape[:2] + [1] * (4 - len(shape)) + shape[2:]).permute(2, 3, 0, 1)
    t = F.interpolate(t, (new_h, new_w), mode=mode, align_corners=None if mode == 'nearest' else False)
    shape[:2] = (new_h, new_w)
    return t.permute(2, 3, 0, 1).reshape(shape).numpy().astype(dtype, copy=False)


@TRANSFORMS.register_module()
class D2ResizeShortestEdge(BaseTransform):
    """Resize the short side to ``short_edge`` (long side at most ``max_size``) as detectron2's test mapper.

    Args:
        short_edge / max_size: ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` (CAT-Seg: 640 / 2560).
        backend: 'pillow' (detectron2's resize) or 'cv2' (cv2.resize, as mmseg's ``Resize``).
        interpolation: 'bilinear' (detectron2's default), 'nearest' or 'bicubic'.

    Updates ``img``, ``img_shape``, ``scale`` (w, h), ``scale_factor`` (w_scale, h_scale), ``keep_ratio`` and, when
    present, ``gt_seg_map`` (nearest).
    """

    def __init__(self, short_edge: int = 640, max_size: int = 2560, backend: str = 'pillow',
                 interpolation: str = 'bilinear'):
        if backend not in ('pillow', 'cv2'):
            raise ValueError(f"backend must be 'pillow' (detectron2) or 'cv2', got {backend!r}")
        if interpolation not in _PIL:
            raise ValueError(f'interpolation must be one of {sorted(_PIL)}, got {interpolation!r}')
        self.short_edge, self.max_size, self.backend, self.interpolation = short_edge, max_size, backend, interpolation

    def _resize(self, img: np.ndarray, new_h: int, new_w: int, interpolation: str) -> np.ndarray:
        if self.backend == 'pillow':
            return d2_resize_image(img, new_h, new_w, interpolation)
        out = cv2.resize(img, (new_w, new_h), interpolation=_CV2[interpolation])
        return out[..., None] if img.ndim == 3 and out.ndim == 2 else out

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        new_h, new_w = d2_shortest_edge_shape(h, w, self.short_edge, self.max_size)
        results['img'] = self._resize(img, new_h, new_w, self.interpolation)
        if results.get('gt_seg_map', None) is not None:
            results['gt_seg_map'] = self._resize(results['gt_seg_map'], new_h, new_w, 'nearest')
        results['img_shape'] = (new_h, new_w)
        results['scale'] = (new_w, new_h)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = True
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(short_edge={self.short_edge}, max_size={self.max_size}, '
                f'backend={self.backend!r}, interpolation={self.interpolation!r})')
