"""Open-vocabulary region classification (METHOD.md section 5), as the authors' ``zero_shot.py`` (DeCLIP main
@2c0b3de, ``src/open_clip/eva_clip/eva_vit_model.py`` ``extract_roi_features`` / ``mask_pool``): regions pooled
from the raw (un-normalised) dense map, L2-normalised, classified against class-name text embeddings.

* ``pooling='box'``: RoIAlign 1x1 (aligned, adaptive sampling) of the box;
* ``pooling='mask'``: the segment's mask at the ORIGINAL image resolution, its longest side resized to the
  token grid (bicubic, no antialiasing, sides rounded with Python's ``round``), zero-padded right/bottom,
  kept where > 0; the plain mean of the tokens under it (a mask with no cell left gives a zero vector, which
  still counts, as in the reference). Needs ``LoadPanopticSegmentIds``.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from ...registry import MODELS
from ..text.vocabulary import ClassVocabularyMixin


def masks_to_grid(masks: torch.Tensor, grid) -> torch.Tensor:
    """Boolean masks (N, H, W) at the original resolution -> (N, gh, gw) on a token grid whose longest side
    covers the longest image side (ResizeLongest + pad right/bottom, then > 0)."""
    n, H, W = masks.shape
    gh, gw = grid
    scale = max(gh, gw) / max(H, W)
    new_h, new_w = round(H * scale), round(W * scale)
    small = masks.float()[:, None]
    if (new_h, new_w) != (H, W):
        small = F.interpolate(small, size=(new_h, new_w), mode='bicubic', align_corners=False)
    small = small[:, 0, :gh, :gw]
    return F.pad(small, (0, gw - small.shape[-1], 0, gh - small.shape[-2])) > 0


def mask_pool(dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The authors' ``mask_pool``: an un-normalised dense map (D, h, w) and boolean masks (n, H, W) at the original
    image resolution (the map's grid covering the image's longest side, :func:`masks_to_grid`) -> (n, D)
    L2-normalised means of the tokens under each mask (zero for a mask with no token)."""
    grid = masks_to_grid(masks, dense.shape[-2:]).flatten(1).to(dense.dtype)               # (n, h*w)
    pooled = grid @ dense.flatten(1).t() / (grid.sum(1, keepdim=True) + 1e-12)
    return F.normalize(pooled, dim=-1)


@MODELS.register_module()
class RegionClassifier(ClassVocabularyMixin, BaseModel):
    """DeCLIPViT + OpenCLIPTextEncoder -> top-k classes per GT region (written to each data sample)."""

    def __init__(self, backbone: dict, text_encoder: dict, class_names: Union[str, Sequence[str]] = 'coco_panoptic',
                 pooling: str = 'box', topk: int = 5, mode: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pooling not in ('box', 'mask'):
            raise ValueError(f"pooling must be 'box' or 'mask', got '{pooling}'")
        self.backbone = MODELS.build(backbone)
        self.init_class_vocabulary(text_encoder, class_names, self.backbone.model_name)
        self.pooling, self.topk, self.mode = pooling, topk, mode

    def region_embeddings(self, dense: torch.Tensor, samples) -> list:
        """Per image (n_i, D) L2-normalised region embeddings from an un-normalised dense map (B, D, h, w)."""
        if self.pooling == 'box':
            return self.backbone.extract_regions(dense, [s.gt_bboxes.to(dense.device) for s in samples])
        out = []
        for i, s in enumerate(samples):
            masks = s.gt_seg_map.to(dense.device)[None] == s.segment_ids.to(dense.device)[:, None, None]
            out.append(mask_pool(dense[i], masks))
        return out

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f"RegionClassifier only predicts; got mode='{mode}'")
        p = self.backbone.patch_size
        h, w = inputs.shape[-2:]
        inputs = F.pad(inputs, (0, -w % p, 0, -h % p))
        dense = self.backbone.extract_dense(inputs, mode=self.mode, normalize=False)
        classes = self.class_embeddings
        for sample, regions in zip(data_samples, self.region_embeddings(dense, data_samples)):
            scores = classes.logits(regions)
            sample.pred_scores = scores
            sample.pred_topk = scores.topk(min(self.topk, scores.shape[-1]), dim=-1).indices
        return data_samples
