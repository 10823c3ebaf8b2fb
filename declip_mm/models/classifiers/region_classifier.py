"""Open-vocabulary region classification (METHOD.md section 5): regions pooled from the dense map, classified
against class-name text embeddings. Boxes are pooled with RoIAlign 1x1 (``pooling='box'``), or masks are
averaged on the dense grid (``pooling='mask'``, needs ``LoadPanopticSegmentIds``)."""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from ...registry import MODELS
from ..text.vocabulary import ClassVocabularyMixin


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
            masks = (s.gt_seg_map.to(dense.device)[None] == s.segment_ids.to(dense.device)[:, None, None]).float()
            H, W = masks.shape[-2:]
            masks = F.pad(masks, (0, dense.shape[-1] * self.backbone.patch_size - W,
                                  0, dense.shape[-2] * self.backbone.patch_size - H))
            weights = F.adaptive_avg_pool2d(masks, dense.shape[-2:]).flatten(1)        # (n, h*w) area fractions
            pooled = weights @ dense[i].flatten(1).t() / weights.sum(1, keepdim=True).clamp_min(1e-6)
            out.append(F.normalize(pooled, dim=-1))
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
