"""Training-free open-vocabulary semantic segmentation with a DeCLIP (or any CLIP) image tower (METHOD.md §5).

    logits = scale * cos(dense feature, class text embedding)     (max over each class's synonyms)

computed per sliding window (or on the whole image), averaged where windows overlap (mmseg's
``EncoderDecoder.slide_inference``), resized to the image, then argmax; pixels whose highest class
probability, softmax(logits), is below ``bg_thresh`` become the background class. Any DeCLIPViT mode
works, so vanilla CLIP, MaskCLIP ('maskclip') and SCLIP-style ('csa') baselines are one config key away.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder

from ...registry import MODELS
from ..text.vocabulary import ClassVocabularyMixin, load_class_names  # noqa: F401 (re-exported)

@MODELS.register_module()
class TrainingFreeSegmentor(ClassVocabularyMixin, EncoderDecoder):
    """mmseg segmentor: DeCLIPViT dense features x class-name text embeddings, no training.

    Args:
        backbone: DeCLIPViT config (or a built DeCLIPViT).
        text_encoder: OpenCLIPTextEncoder config (same open_clip model; the ORIGINAL CLIP weights, since DeCLIP
            keeps the text tower frozen).
        class_names: list, bundled list name or file (synonyms separated by ';').
        logit_scale: the scale of the cosine logits (40; 80 for VOC21).
        bg_thresh: pixels whose top softmax probability is below it get ``bg_index`` (0 = off).
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
        self.num_classes = self.out_channels = len(self.class_names)
        if not 0 <= bg_index < self.num_classes:
            raise ValueError(f'bg_index {bg_index} outside the {self.num_classes} classes')
        self.logit_scale, self.bg_thresh, self.bg_index, self.mode = logit_scale, bg_thresh, bg_index, mode
        self.align_corners = False
        self.test_cfg = ConfigDict(test_cfg)
        self.train_cfg = None
        self.decode_head = None

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """Images (B, 3, H, W) -> class logits (B, K, H, W): pad to the patch size, cosine logits, resize."""
        p = self.backbone.patch_size
        h, w = inputs.shape[-2:]
        padded = F.pad(inputs, (0, -w % p, 0, -h % p))
        dense = self.backbone.extract_dense(padded, mode=self.mode)
        logits = self.class_embeddings.logits_map(dense, self.logit_scale)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode='bilinear', align_corners=False)
        return logits[..., :h, :w]

    def postprocess_result(self, seg_logits, data_samples=None):
        data_samples = super().postprocess_result(seg_logits, data_samples)
        if self.bg_thresh > 0:
            for sample in data_samples:
                probs = sample.seg_logits.data.softmax(dim=0)
                low = probs.max(dim=0, keepdim=True).values < self.bg_thresh
                sample.pred_sem_seg.data[low] = self.bg_index
        return data_samples

    def extract_feat(self, inputs: torch.Tensor):
        return self.backbone(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError('TrainingFreeSegmentor is training-free; use tools/test.py')

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs, None)
