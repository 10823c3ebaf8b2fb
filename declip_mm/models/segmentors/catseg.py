"""CAT-Seg (CVPR'24) with a DeCLIP image tower, as an mmseg segmentor (docs/catseg.md; the DeCLIP_CATSeg
branch @06262d4 for the EVA specifics, CAT-Seg @6d3a188 for the rest).

    image (CLIP-normalised, at the CLIP resolution) -> DeCLIPViT ('csa', attention scale 1): dense map (res3) and the
    outputs of blocks 3 / 7 (B) -> ConvT x2 / x4 (res4, res5); class names -> the text tower ('A photo of a {} in
    the scene', one prompt, recomputed every training step) -> CATSegAggregator -> per-class logits at 4x the grid

Training: per-class BCE against the one-hot label (ignore pixels count as negatives, as the reference). Only the q
and v projection weights of every vision block and the text blocks' ``in_proj_weight`` (q, k, v) of the CLIP towers
train (DeCLIP's rule for EVA), at lr x 0.01 (the configs' ``paramwise_cfg``). Test: CAT-Seg's sliding window (four
384 windows of the 640 x 640 image plus the global view, ``catseg_inference``), class-aggregation pooling 1 x 1.
"""
import re
from typing import Dict, Optional, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from torch import nn

from ...registry import MODELS
from ...vocabularies import catseg_vocabulary
from ..clip_factory import create_clip
from .catseg_inference import sliding_window_probabilities

VISION_TRAINABLE = re.compile(r'blocks\.\d+\.attn\.(q_proj|v_proj)\.weight$')
TEXT_TRAINABLE = re.compile(r'transformer\.resblocks\.\d+\.attn\.in_proj_weight$')


def catseg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Logits (B, K, h, w) resized (bilinear) to the labels (B, H, W); per-class BCE with the one-hot label,
    ignore pixels all-zero (negatives for every class), mean over B*H*W*K."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear', align_corners=False)
    valid = labels != ignore_index
    target = F.one_hot(torch.where(valid, labels, 0).long(), logits.shape[1]).to(logits.dtype)
    target = target * valid[..., None]
    return F.binary_cross_entropy_with_logits(logits.permute(0, 2, 3, 1), target)


@MODELS.register_module()
class CATSeg(BaseSegmentor):
    """CAT-Seg (CVPR'24) with a DeCLIPViT image tower (module doc): an mmseg segmentor trained with per-class BCE.

    Args:
        backbone (dict): DeCLIPViT config of an EVA02 tower ('csa', attention scale 1); ``out_indices`` = the two
            guidance blocks ([3, 7] B, [7, 15] L). Its ``trainable`` is replaced: only the q / v projection weights
            train.
        text_model (str): the open_clip model of the text tower (the backbone's ``model_name``).
        class_names (str | Sequence[str]): the training vocabulary (COCO-Stuff's 171, 'coco'): names, a json, or
            the name of a bundled CAT-Seg vocabulary ('coco', 'ade150', 'ade847', 'pc59', 'pc459', 'voc20', 'voc20b').
        text_pretrained (str, optional): the ORIGINAL CLIP weights of the text tower (tag or file); None = random
            (tests). Defaults to None.
        test_class_names (str | Sequence[str], optional): the test vocabulary, as ``class_names``; None = the
            training one. Defaults to None.
        template (str): the single prompt. Defaults to 'A photo of a {} in the scene'.
        clip_resolution (int): the CLIP input side (384 B, 336 L). Defaults to 384.
        aggregator (dict): ``CATSegAggregator`` config. Defaults to ``dict(type='CATSegAggregator')``.
        guidance_dims (Sequence[int]): the outputs of the two guidance ConvTs (x2, x4). Defaults to (256, 128).
        train_pool (Sequence[int]): the class-aggregation pooling in training. Defaults to (2, 2).
        test_pool (Sequence[int]): the class-aggregation pooling at test. Defaults to (1, 1).
        test_cfg (dict): the sliding window: ``out_res`` (the side the image is resized to), ``kernel`` (the window
            side), ``overlap``. Defaults to ``dict(out_res=640, kernel=384, overlap=0.333)``.
        ignore_index (int): the label value that counts as negative for every class. Defaults to 255.
        data_preprocessor (dict, optional): mmseg ``SegDataPreProcessor`` config (CLIP mean / std).
            Defaults to None.
        init_cfg (dict, optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self, backbone: dict, text_model: str, class_names: Union[str, Sequence[str]], text_pretrained=None,
                 test_class_names: Union[None, str, Sequence[str]] = None, template: str = 'A photo of a {} in the scene',
                 clip_resolution: int = 384, aggregator: dict = dict(type='CATSegAggregator'),
                 guidance_dims: Sequence[int] = (256, 128), train_pool=(2, 2), test_pool=(1, 1),
                 test_cfg: dict = dict(out_res=640, kernel=384, overlap=0.333), ignore_index: int = 255,
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(dict(backbone, trainable='all'))
        if self.backbone.family != 'eva':
            raise NotImplementedError(f'CAT-Seg here follows DeCLIP_CATSeg, for EVA02 towers; got '
                                      f'{self.backbone.model_name} ({self.backbone.family})')
        if len(self.backbone.out_indices) != 2:
            raise ValueError(f'backbone.out_indices must be the two guidance blocks, got {self.backbone.out_indices}')
        if text_model != self.backbone.model_name:
            raise ValueError(f"text_model '{text_model}' and backbone '{self.backbone.model_name}' must be the same "
                             'open_clip model (one joint embedding space)')
        clip, _ = create_clip(text_model, text_pretrained)
        clip.visual = nn.Identity()
        self.text_encoder = clip
        self.tokenizer = open_clip.get_tokenizer(text_model)
        for name, p in self.backbone.named_parameters():
            p.requires_grad = bool(VISION_TRAINABLE.search(name))
        for name, p in self.text_encoder.named_parameters():
            p.requires_grad = bool(TEXT_TRAINABLE.search(name))
        width = self.backbone.width
        self.guidance_up = nn.ModuleList([nn.ConvTranspose2d(width, guidance_dims[0], 2, stride=2),
                                          nn.ConvTranspose2d(width, guidance_dims[1], 4, stride=4)])
        self.aggregator = MODELS.build(aggregator)
        self.class_names = catseg_vocabulary(class_names)
        self.test_class_names = catseg_vocabulary(test_class_names or class_names)
        self.template, self.clip_resolution = template, clip_resolution
        self.train_pool, self.test_pool, self.ignore_index = tuple(train_pool), tuple(test_pool), ignore_index
        self.test_cfg = test_cfg
        self.num_classes = len(self.test_class_names)
        self._tokens: Dict[tuple, torch.Tensor] = {}
        self._test_text: Dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ text
    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """(T, 1, D) L2-normalised embeddings of the prompt for each name; recomputed with gradients in training
        (the text tower fine-tunes), cached per vocabulary at test. Tokens are cached per vocabulary."""
        key = tuple(names)
        if not self.training and key in self._test_text:
            return self._test_text[key]
        if key not in self._tokens:
            self._tokens[key] = self.tokenizer([self.template.format(n) for n in names])
        device = next(self.aggregator.parameters()).device
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            emb = F.normalize(self.text_encoder.encode_text(self._tokens[key].to(device)), dim=-1)[:, None]
        if not self.training:
            self._test_text[key] = emb
        return emb

    # ------------------------------------------------------------------ image
    def logits(self, images: torch.Tensor, names: Sequence[str], pool) -> torch.Tensor:
        """CLIP-normalised images (B, 3, H, W) -> per-class logits (B, T, 4h, 4w) at the CLIP resolution."""
        if images.shape[-1] != self.clip_resolution or images.shape[-2] != self.clip_resolution:
            images = F.interpolate(images, size=(self.clip_resolution,) * 2, mode='bilinear', align_corners=False)
        block_a, block_b, dense = self.backbone(images)
        guidance = [self.guidance_up[0](block_a), self.guidance_up[1](block_b)]
        text = self.text_embeddings(names)
        return self.aggregator(dense, text.expand(images.shape[0], -1, -1, -1), guidance, pool)

    def extract_feat(self, inputs):
        return self.backbone(inputs)

    def encode_decode(self, inputs, batch_img_metas):
        return self.logits(inputs, self.test_class_names, self.test_pool)

    def _forward(self, inputs, data_samples=None):
        return self.logits(inputs, self.class_names, self.train_pool)

    def loss(self, inputs, data_samples) -> dict:
        labels = torch.stack([s.gt_sem_seg.data[0] for s in data_samples])
        logits = self.logits(inputs, self.class_names, self.train_pool)
        return dict(loss_bce=catseg_loss(logits, labels, self.ignore_index))

    def predict(self, inputs, data_samples=None):
        """Each image through CAT-Seg's sliding window; class probabilities and the argmax at the original size."""
        out = []
        for image, sample in zip(inputs, data_samples):
            meta = sample.metainfo
            h, w = meta.get('img_shape', image.shape[-2:])
            probs = sliding_window_probabilities(
                image[:, :h, :w], lambda crops: self.logits(crops, self.test_class_names, self.test_pool),
                ori_shape=meta['ori_shape'][:2], clip_resolution=self.clip_resolution, mean=(0.0,) * 3,
                std=(1.0,) * 3, **self.test_cfg)
            sample.set_data(dict(seg_logits=PixelData(data=probs),
                                 pred_sem_seg=PixelData(data=probs.argmax(dim=0, keepdim=True))))
            out.append(sample)
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()                   # as DeCLIP_CATSeg's CustomCLIP.train(): no dropout there anyway
        return self
