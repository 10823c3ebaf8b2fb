"""Training-free open-vocabulary semantic segmentation with a DeCLIP (or any CLIP) image tower (METHOD.md §5),
following the authors' ``DeCLIPSegmentation`` (DeCLIP zero-shot branch, built on ProxyCLIP):

1. every synonym of every class is its own text query (S queries for K classes);
2. per window: the cosine of the L2-normalised dense features with each query, bilinear to the window
   (mmseg's ``EncoderDecoder.slide_inference``: windows summed, divided by their coverage);
3. bilinear to the original image size, times the logit scale;
4. softmax over ALL S queries; per class the highest probability among its queries;
5. argmax over classes; pixels whose highest class probability is below ``bg_thresh`` become ``bg_index``.

``seg_logits`` of each result holds the class probabilities of step 4 (K, H, W). Any DeCLIPViT mode works,
so vanilla CLIP, MaskCLIP ('maskclip') and SCLIP-style ('csa') baselines are one config key away.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.structures import SegDataSample

from ...registry import MODELS
from ..text.vocabulary import ClassVocabularyMixin, load_class_names  # noqa: F401 (re-exported)


def patch_padding(h: int, w: int, patch: int):
    """(left, right, top, bottom) zero padding that makes an h x w window a multiple of the patch size, split
    evenly with the extra pixel right / bottom (ProxyCLIP's ``compute_padsize``)."""
    dw, dh = -w % patch, -h % patch
    return dw // 2, dw - dw // 2, dh // 2, dh - dh // 2


@MODELS.register_module()
class TrainingFreeSegmentor(ClassVocabularyMixin, EncoderDecoder):
    """mmseg segmentor: DeCLIPViT dense features x class-name text embeddings, no training.

    Args:
        backbone: DeCLIPViT config (or a built DeCLIPViT).
        text_encoder: OpenCLIPTextEncoder config (same open_clip model; the ORIGINAL CLIP weights, since DeCLIP
            keeps the text tower frozen).
        class_names: list, bundled list name or file (synonyms separated by ';').
        logit_scale: the scale of the cosine logits (40; 80 for VOC21), applied at the original size.
        bg_thresh: pixels whose highest class probability is below it get ``bg_index`` (0 = off).
        bg_index: the background class index (VOC21, PC60, COCO-Object: 0).
        mode: DeCLIPViT mode used for the dense features; None = the backbone's.
        test_cfg: mmseg test settings: mode 'slide' (crop_size, stride) or 'whole'.
    """

    def __init__(self, backbone: dict, text_encoder: dict, class_names: Union[str, Sequence[str]],
                 logit_scale: float = 40.0, bg_thresh: float = 0.0, bg_index: int = 0, mode: Optional[str] = None,
                 test_cfg: dict = dict(mode='slide', crop_size=(336, 336), stride=(112, 112)),
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # a built DeCLIPViT may be passed (the distiller evaluates its student this way)
        self.backbone = backbone if isinstance(backbone, torch.nn.Module) else MODELS.build(backbone)
        self.init_class_vocabulary(text_encoder, class_names, self.backbone.model_name)
        self.num_classes = len(self.class_names)
        self.out_channels = len(self.text_embeddings)          # the slide buffers hold one map per query
        if not 0 <= bg_index < self.num_classes:
            raise ValueError(f'bg_index {bg_index} outside the {self.num_classes} classes')
        self.logit_scale, self.bg_thresh, self.bg_index, self.mode = logit_scale, bg_thresh, bg_index, mode
        self.align_corners = False
        self.test_cfg = ConfigDict(test_cfg)
        self.train_cfg = None
        self.decode_head = None

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """Windows (B, 3, h, w) -> query cosines (B, S, h, w): padded to the patch size, dense features,
        cosine with every query, bilinear to the padded window, padding cut off."""
        p = self.backbone.patch_size
        h, w = inputs.shape[-2:]
        left, right, top, bottom = patch_padding(h, w, p)
        padded = F.pad(inputs, (left, right, top, bottom))
        dense = self.backbone.extract_dense(padded, mode=self.mode)
        cosines = self.class_embeddings.query_cosines(dense)
        cosines = F.interpolate(cosines, size=padded.shape[-2:], mode='bilinear', align_corners=False)
        return cosines[..., top:top + h, left:left + w]

    def postprocess_result(self, seg_logits: torch.Tensor, data_samples=None):
        """Query cosines (B, S, H, W) of the network input -> per image: padding removed, un-flipped, bilinear
        to ``ori_shape``, scaled, class probabilities (K, H0, W0) as ``seg_logits``, labels as ``pred_sem_seg``."""
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=seg_logits.shape[-2:])) for _ in seg_logits]
        H, W = seg_logits.shape[-2:]
        for cosines, sample in zip(seg_logits, data_samples):
            meta = sample.metainfo
            left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
            cosines = cosines[None, :, top:H - bottom, left:W - right]
            if meta.get('flip'):
                cosines = cosines.flip(dims=(3,) if meta.get('flip_direction') == 'horizontal' else (2,))
            cosines = F.interpolate(cosines, size=tuple(meta['ori_shape'][:2]), mode='bilinear',
                                    align_corners=False)[0]
            probs = self.class_embeddings.class_probabilities(cosines * self.logit_scale, dim=0)
            best, labels = probs.max(dim=0, keepdim=True)
            if self.bg_thresh > 0:
                labels[best < self.bg_thresh] = self.bg_index
            sample.set_data(dict(seg_logits=PixelData(data=probs), pred_sem_seg=PixelData(data=labels)))
        return data_samples

    def extract_feat(self, inputs: torch.Tensor):
        return self.backbone(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError('TrainingFreeSegmentor is training-free; use tools/test.py')

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs, None)
