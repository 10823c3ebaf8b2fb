"""One home for facts the package shares: image normalisation statistics, the tiny test presets, the synonym
separator and the training-free segmentation protocol's defaults.

Pure Python (no torch, no mmengine): the ``declip-mm`` command reads it before it imports anything heavy. Configs
are mmengine data files and keep their literal numbers; each such line names the constant it copies.
"""
from dataclasses import dataclass
from typing import Optional

# CLIP's (OpenAI) image statistics, RGB: open_clip's OPENAI_DATASET_MEAN / OPENAI_DATASET_STD (0-1 scale) ...
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ... and the same x 255 for 0-255 pixels (mmengine data preprocessors; detectron2's CAT-Seg config writes these)
CLIP_MEAN_255 = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD_255 = (68.5005327, 66.6321579, 70.32316305)
# rounded to 3 decimals, as the authors' segmentation configs (and ours, configs/_base_/models/) write them: the
# training-free and region-classification protocols normalise with these
CLIP_MEAN_255_ROUNDED = (122.771, 116.746, 104.094)
CLIP_STD_255_ROUNDED = (68.501, 66.632, 70.323)

# ImageNet's (torchvision) statistics, RGB: the VFM teachers' input (DINOv2, DINO, SAM) and mmdet's F-ViT configs
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

# tiny random open_clip presets for tests and the CPU demo (models/presets.py registers them): no weights exist
TINY_MODELS = ('DeCLIP-Tiny-ViT-16', 'DeCLIP-Tiny-EVA02-16')

# the dense-feature tools' network input (DenseFeatureExtractor, AttentionExplorer, `declip-mm features / attention`):
# the photo's longest side in pixels (the region-classification protocol's), and video frames per forward
DENSE_LONG_SIDE = 448
VIDEO_BATCH_SIZE = 8

# open_clip's Hugging Face folder layout (open_clip/constants.py HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
# and the weights file of a weights folder in open_clip's order of preference (factory._find_checkpoint_in_dir):
# its Hugging Face layout's two names first, then transformers' (models/backbones/checkpoints.py reads the layout)
OPEN_CLIP_HF_CONFIG = 'open_clip_config.json'
FOLDER_WEIGHTS_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin', 'model.safetensors',
                        'pytorch_model.bin')

# separates the synonyms of one class in a class name ('sofa; couch'): each synonym is its own text query
SYNONYM_SEPARATOR = ';'


@dataclass(frozen=True)
class SegmentationProtocol:
    """The training-free segmentation protocol of the benchmark configs (configs/segmentation/, the authors'
    ``DeCLIPSegmentation``) where a caller gives nothing else: ``TrainingFreeSegmentor``'s defaults,
    ``OpenVocabSegmenter``'s (where None means "the protocol's") and so the ``declip-mm segment`` command's, which
    passes None for every option the user did not set.

    mode: the dense features of DeCLIPViT's last block; attn_scale: its attention scale (the authors' protocol runs
    every checkpoint at 1/sqrt(head width), whatever it was distilled with); logit_scale: the scale of the cosine
    logits (VOC21's config sets 80); bg_thresh: with a named background, pixels whose best class probability is
    below it become background (COCO-Object's 0.2; VOC21's config 0.4); window / stride: the sliding window and its
    stride in network pixels; short_side / max_long_side: mmseg's
    ``Resize(scale=(max_long_side, short_side), keep_ratio=True)``."""
    mode: str = 'csa'
    attn_scale: str = '1/sqrt(d)'
    logit_scale: float = 40.0
    bg_thresh: float = 0.2
    window: int = 336
    stride: int = 112
    short_side: int = 448
    max_long_side: int = 4096

    def or_default(self, name: str, value):
        """``value``, or the protocol's ``name`` when ``value`` is None."""
        return getattr(self, name) if value is None else value

    def test_cfg(self, window: Optional[int] = None, stride: Optional[int] = None) -> dict:
        """mmseg's ``test_cfg``: ``window`` x ``window`` sliding windows at ``stride`` (None: the protocol's), or the
        whole image at once for window 0."""
        window, stride = self.or_default('window', window), self.or_default('stride', stride)
        if not window:
            return dict(mode='whole')
        return dict(mode='slide', crop_size=(window, window), stride=(stride, stride))


SEGMENTATION_PROTOCOL = SegmentationProtocol()
