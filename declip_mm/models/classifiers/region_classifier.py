"""Open-vocabulary region classification (docs/evaluation.md), as the authors' ``zero_shot.py`` (DeCLIP main
@2c0b3de, ``src/open_clip/eva_clip/eva_vit_model.py`` ``extract_roi_features`` / ``mask_pool``): regions pooled
from the raw (un-normalised) dense map, L2-normalised, classified against class-name text embeddings.

* ``pooling='box'``: RoIAlign 1x1 (aligned, adaptive sampling) of the box;
* ``pooling='mask'``: the segment's mask at the ORIGINAL image resolution, its longest side resized to the
  token grid (bicubic, no antialiasing, sides rounded with Python's ``round``), zero-padded right/bottom,
  kept where > 0; the plain mean of the tokens under it (a mask with no cell left gives a zero vector, which
  still counts, as in the reference). Needs ``LoadPanopticSegmentIds``.

Both poolings read the same dense map, in ONE mode. Which one (first that applies): the classifier's ``mode``; the
backbone config's ``mode``; the mode a DeCLIPViT checkpoint stores; else the authors' ``'qq'``. DeCLIP's
``zero_shot.py`` (main @2c0b3de, lines 18-32) evaluates in the mode of ``--mode``, whose default
(``params.py`` lines 290-296) and value in both training scripts is ``qq_vfm_distill`` -> ``'qq'``, and passes it to
box pooling and mask pooling alike (lines 80-90; EVA's ``encode_masks`` hands it on to ``mask_pool``,
``eva_clip/model.py`` lines 360-361). A weights file that says nothing (the authors' ``.pt``, an open_clip file or
tag) is also run at attention scale 1, as their ``ss_attn`` leaves the 1/sqrt(d) factor out
(``eva_vit_model.py`` lines 277-293), unless the backbone config sets ``attn_scale``.
"""
import logging
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel

from ...registry import MODELS
from ..backbones.checkpoints import stored_settings
from ..clip_factory import resolve_pretrained
from ..text.vocabulary import ClassVocabularyMixin

AUTHORS_MODE = 'qq'        # DeCLIP main @2c0b3de: params.py --mode default 'qq_vfm_distill' -> zero_shot.py 'qq'
AUTHORS_ATTN_SCALE = 1.0   # eva_vit_model.py ss_attn: q q^T / k k^T without '* self.scale' (commented out)
DECLIP_BACKBONES = ('DeCLIPViT', 'declip_mm.DeCLIPViT')


def stored_backbone_settings(backbone: dict) -> dict:
    """What a DeCLIPViT backbone config's ``pretrained`` checkpoint says about itself (``meta.declip``: mode,
    attn_scale, ...), or {} for none (random init, an open_clip tag or file, the authors' EVA-CLIP/DeCLIP ``.pt``):
    asked of ``models/backbones/checkpoints.py`` (``stored_settings``: only the file's pickled header is read)."""
    if backbone.get('type') not in DECLIP_BACKBONES or not backbone.get('pretrained'):
        return {}
    return stored_settings(resolve_pretrained(backbone.get('model_name', 'EVA02-B-16'), backbone['pretrained'],
                                              backbone.get('cache_dir')))


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
    """DeCLIPViT + OpenCLIPTextEncoder -> top-k classes per GT region (written to each data sample).

    Args:
        backbone (dict): DeCLIPViT config; a file that stores no attention scale runs at the authors' 1.0 unless
            ``attn_scale`` is set.
        text_encoder (dict): OpenCLIPTextEncoder config (the ORIGINAL CLIP weights of the same open_clip model).
        class_names (str | Sequence[str]): list, bundled list name or file. Defaults to 'coco_panoptic'.
        pooling (str): 'box' (RoIAlign 1x1 of the box) or 'mask' (mean of the tokens under the segment's mask).
            Defaults to 'box'.
        topk (int): predictions kept per region. Defaults to 5.
        mode (str, optional): the dense mode of both poolings ('qq', 'csa', 'kk', 'vanilla', 'maskclip'). None: the
            backbone config's ``mode``, else the mode its checkpoint stores, else the authors' 'qq' (module
            docstring). An explicit mode is used even where the checkpoint stores another one (logged as a
            warning). Defaults to None.
        data_preprocessor (dict, optional): mmengine data preprocessor config. Defaults to None.
        init_cfg (dict, optional): mmengine initialisation config. Defaults to None.

    Attributes:
        mode: the mode used; ``mode_source``: 'config' (this classifier's ``mode``), 'backbone config',
            'checkpoint' or 'authors default'.
    """

    def __init__(self, backbone: dict, text_encoder: dict, class_names: Union[str, Sequence[str]] = 'coco_panoptic',
                 pooling: str = 'box', topk: int = 5, mode: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pooling not in ('box', 'mask'):
            raise ValueError(f"pooling must be 'box' or 'mask', got '{pooling}'")
        backbone = dict(backbone)
        stored = stored_backbone_settings(backbone)
        source = backbone.get('pretrained') or 'random init'
        if mode is not None:
            self.mode_source = 'config'
            if stored.get('mode') not in (None, mode):
                print_log(f"{source} was trained with mode={stored['mode']!r}; region classification runs it with "
                          f'mode={mode!r} as configured', logger='current', level=logging.WARNING)
        elif backbone.get('mode') is not None:
            mode, self.mode_source = backbone['mode'], 'backbone config'
        elif stored.get('mode') is not None:
            mode, self.mode_source = stored['mode'], 'checkpoint'
        else:
            mode, self.mode_source = AUTHORS_MODE, 'authors default'
        if backbone.get('type') in DECLIP_BACKBONES and backbone.get('attn_scale') is None \
                and stored.get('attn_scale') is None:
            backbone['attn_scale'] = AUTHORS_ATTN_SCALE
        if self.mode_source == 'authors default':
            print_log(f"{source} stores no dense mode: region classification runs it in '{AUTHORS_MODE}' (box and mask "
                      f"pooling) at attn_scale {backbone.get('attn_scale')}, as the authors' zero_shot.py "
                      f"(--mode qq_vfm_distill). Weights distilled in another mode (the released "
                      f"DeCLIP_*_csa_* files: csa) need model.mode='csa'.", logger='current', level=logging.WARNING)
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
