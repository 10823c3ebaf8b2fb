"""CAT-Seg's test protocol (CVPR'24 ``CATSeg.inference_sliding_window``; docs/catseg.md), independent of the model:

1. the image (shorter side already 640 by the data pipeline) is resized to ``out_res`` x ``out_res`` (bilinear);
2. four ``kernel`` x ``kernel`` windows at stride ``int(kernel * (1 - overlap))`` (0 and 256 per axis) plus the
   whole image resized to ``kernel`` x ``kernel`` (the global view) form one batch;
3. each crop is CLIP-normalised and resized to the CLIP resolution; the model returns per-class logits;
4. sigmoid; each map is resized to ``kernel``; the windows are folded back and divided by their coverage
   (1, 2 or 4 windows per pixel); the global view is resized to ``out_res``; the two are averaged;
5. the result is resized (bilinear) to the original image size.
"""
from typing import Callable, Sequence, Tuple

import torch
import torch.nn.functional as F

from ...constants import CLIP_MEAN_255 as CLIP_PIXEL_MEAN, CLIP_STD_255 as CLIP_PIXEL_STD  # CAT-Seg's PIXEL_MEAN / STD


def window_coverage(out_res: int, kernel: int, stride: int) -> torch.Tensor:
    """(out_res, out_res) count of the windows covering each pixel."""
    ones = torch.ones(1, 1, out_res, out_res)
    unfold = F.unfold(ones, kernel_size=kernel, stride=stride)
    return F.fold(unfold, (out_res, out_res), kernel_size=kernel, stride=stride)[0, 0]


def sliding_window_probabilities(image: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor],
                                 ori_shape: Sequence[int], out_res: int = 640, kernel: int = 384,
                                 overlap: float = 0.333, clip_resolution: int = 384,
                                 mean: Tuple[float, ...] = CLIP_PIXEL_MEAN,
                                 std: Tuple[float, ...] = CLIP_PIXEL_STD) -> torch.Tensor:
    """image (3, H, W) in 0-255 RGB; ``predict`` maps CLIP-normalised crops (N, 3, r, r) to logits (N, K, h, w).
    Returns class probabilities (K, *ori_shape)."""
    stride = int(kernel * (1 - overlap))
    x = F.interpolate(image[None].float(), size=(out_res, out_res), mode='bilinear', align_corners=False)
    windows = F.unfold(x, kernel_size=kernel, stride=stride)                         # (1, 3*k*k, L)
    windows = windows[0].t().reshape(-1, 3, kernel, kernel)
    whole = F.interpolate(image[None].float(), size=(kernel, kernel), mode='bilinear', align_corners=False)
    crops = torch.cat([windows, whole])
    m = torch.tensor(mean, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    crops = F.interpolate((crops - m) / s, size=(clip_resolution, clip_resolution), mode='bilinear',
                          align_corners=False)
    probs = F.interpolate(predict(crops), size=(kernel, kernel), mode='bilinear', align_corners=False).sigmoid()
    local, global_view = probs[:-1], probs[-1:]
    folded = F.fold(local.flatten(1).t()[None], (out_res, out_res), kernel_size=kernel, stride=stride)
    local = folded / window_coverage(out_res, kernel, stride).to(folded)
    merged = (local + F.interpolate(global_view, size=(out_res, out_res), mode='bilinear', align_corners=False)) / 2
    return F.interpolate(merged, size=tuple(ori_shape), mode='bilinear', align_corners=False)[0]
