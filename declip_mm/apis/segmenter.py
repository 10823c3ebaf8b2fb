"""``OpenVocabSegmenter``: one call from a photo and a vocabulary to a label map and per-class scores.

    from declip_mm.apis import OpenVocabSegmenter
    seg = OpenVocabSegmenter('EVA02-B-16', backbone='declip_eva02_b16.pth', text_weights='merged2b_s8b_b131k',
                             device='cuda')                      # or OpenVocabSegmenter.from_config(cfg, ckpt)
    res = seg('photo.jpg', 'cat,dog,sofa; couch', background='background')
    res.labels (H, W) int64, res.probs (K, H, W) float32, res.class_names, res.areas(), res.overlay()

It runs the training-free protocol of the benchmark configs (``TrainingFreeSegmentor``: sliding windows, the
softmax over all synonym queries, the background threshold; its defaults are ``constants.SEGMENTATION_PROTOCOL``)
on users' images: loaded with EXIF rotation, any pixel format (``inputs.py``), sized by the rules of
``image_size.py``. The model is built once; a new vocabulary only re-encodes its names (cached on disk by the
text encoder).

The lower-level pair ``make demo`` and the benchmarks' checks use, on a segmentor of their own:

    seg = build_segmentor(backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='declip.pth'),
                          text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16',
                                            pretrained='merged2b_s8b_b131k'),
                          class_names=['background', 'cat', 'sofa; couch'], bg_thresh=0.4, logit_scale=80.)
    labels, probs = segment_image(seg, rgb_uint8_image)     # (H, W) class indices, (K, H, W) probabilities

``segment_image`` is the one image-to-prediction pipeline: ``OpenVocabSegmenter`` runs every image through it.

mmengine's ``BaseInferencer`` (the base of mmseg's ``MMSegInferencer``) is not used: its ``__call__`` returns a
dict from ``preprocess -> forward (model.test_step) -> visualize -> postprocess`` of a config's test pipeline, while
this API takes a vocabulary with each call, sizes users' images by its own rules (EXIF, elongated images, output
caps), runs under a precision and a lock, and returns result objects.
"""
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..constants import CLIP_MEAN_255_ROUNDED, CLIP_STD_255_ROUNDED, SEGMENTATION_PROTOCOL, TINY_MODELS
from .image_size import MAX_ASPECT, MAX_OUTPUT_PIXELS, output_size, rescaled, segmentation_input_size
from .backends import check_backend, onnx_towers
from .inputs import as_rgb_image
from .precision import autocast, check_device, resolve_precision
from .random_weights import warn_if_random
from .visualization import segmentation_overlay
from .vocabulary import Vocabulary, parse_vocabulary

VocabularySpec = Union[str, Sequence[str], Vocabulary]


def build_segmentor(backbone: dict, text_encoder: dict, class_names, **kwargs):
    """A TrainingFreeSegmentor in eval mode (see its docstring for the keyword arguments); the data preprocessor
    is the benchmark configs' (the reference's CLIP mean/std, RGB input)."""
    from mmengine.registry import init_default_scope

    from ..registry import MODELS
    init_default_scope('declip_mm')
    kwargs.setdefault('data_preprocessor', dict(type='mmseg.SegDataPreProcessor', mean=list(CLIP_MEAN_255_ROUNDED),
                                                std=list(CLIP_STD_255_ROUNDED), bgr_to_rgb=False))
    return MODELS.build(dict(type='TrainingFreeSegmentor', backbone=backbone, text_encoder=text_encoder,
                             class_names=class_names, **kwargs)).eval()


@torch.no_grad()
def segment_image(segmentor, image: np.ndarray, short_side: Optional[int] = None,
                  input_size: Optional[Tuple[int, int]] = None, output_size: Optional[Tuple[int, int]] = None,
                  precision: str = 'fp32') -> Tuple[np.ndarray, torch.Tensor]:
    """RGB uint8 (H, W, 3) -> (labels (h, w) int64, class probabilities (K, h, w) float32 on the CPU), exactly as
    the benchmark configs run an image: resized (bilinear) to ``input_size`` (h', w') (None: mmseg's
    ``Resize(scale=(4096, short_side), keep_ratio=True)``, ``short_side`` None = the protocol's 448), the
    segmentor's data preprocessor, ``predict`` under ``precision`` (slide or whole, per its test_cfg; the protocol
    of ``TrainingFreeSegmentor``), the result at ``output_size`` (h, w) (None: the image's (H, W))."""
    import mmcv
    from mmseg.structures import SegDataSample
    h, w = image.shape[:2]
    if input_size is None:
        short = SEGMENTATION_PROTOCOL.or_default('short_side', short_side)
        input_size = rescaled(h, w, min(short / min(h, w), SEGMENTATION_PROTOCOL.max_long_side / max(h, w)))
    in_h, in_w = input_size
    resized = mmcv.imresize(image, (in_w, in_h), interpolation='bilinear', backend='cv2')
    sample = SegDataSample(metainfo=dict(ori_shape=tuple(output_size or (h, w)), img_shape=(in_h, in_w)))
    tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    data = segmentor.data_preprocessor(dict(inputs=[tensor], data_samples=[sample]), False)
    with autocast(precision, data['inputs'].device):
        out = segmentor.predict(data['inputs'], data['data_samples'])[0]
    return out.pred_sem_seg.data[0].cpu().numpy().astype(np.int64), out.seg_logits.data.float().cpu()


@dataclass
class SegmentationResult:
    """One image's segmentation, at the output size (the image's own size up to ``max_output_pixels``).

    labels: (H, W) int64 class indices; probs: (K, H, W) float32 class probabilities; class_names: K names
    (each class's first synonym); background: the named background class or None; image: (H, W, 3) uint8, the
    photo at the output size (for the overlay); input_shape: the size the network saw."""
    labels: np.ndarray
    probs: np.ndarray
    class_names: List[str]
    background: Optional[str]
    image: np.ndarray = field(repr=False)
    input_shape: Tuple[int, int] = (0, 0)
    source_shape: Tuple[int, int] = (0, 0)

    @property
    def background_index(self) -> Optional[int]:
        return None if self.background is None else self.class_names.index(self.background)

    def areas(self) -> Dict[str, float]:
        """Class name -> fraction of the pixels labelled with it (all K classes; they sum to 1)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        return {name: float(c) / self.labels.size for name, c in zip(self.class_names, counts)}

    def scores(self) -> Dict[str, Dict[str, float]]:
        """Class name -> area (pixel fraction), mean probability over its pixels (0 without pixels) and its
        highest probability anywhere."""
        areas = self.areas()
        out = {}
        for k, name in enumerate(self.class_names):
            mask = self.labels == k
            out[name] = dict(area=areas[name], mean_prob=float(self.probs[k][mask].mean()) if mask.any() else 0.0,
                             max_prob=float(self.probs[k].max()))
        return out

    def overlay(self, alpha: float = 0.5, note: Optional[str] = None):
        """A PIL image: the photo with a colour per class (the background black) and a legend; ``note`` on a red
        band on top (the CLI marks random-weight results so)."""
        return segmentation_overlay(self.image, self.labels, self.class_names, alpha=alpha,
                                    background_index=self.background_index, note=note)

    def label_image(self):
        """The labels as a PIL image: 8-bit (16-bit above 255 classes), pixel value = class index."""
        from PIL import Image
        if len(self.class_names) <= 256:
            return Image.fromarray(self.labels.astype(np.uint8))
        return Image.fromarray(self.labels.astype(np.uint16))

    def summary(self) -> Dict:
        """JSON-ready: class names, background, sizes and per-class scores."""
        return dict(class_names=self.class_names, background=self.background, output_size=list(self.labels.shape),
                    image_size=list(self.source_shape), input_size=list(self.input_shape), scores=self.scores())


class OpenVocabSegmenter:
    """Training-free open-vocabulary segmentation for users (module doc).

    Args:
        model_name (str): the open_clip model of the weights ('EVA02-B-16', 'ViT-B-16', ...; 'DeCLIP-Tiny-ViT-16' is
            a tiny random test preset). Defaults to 'DeCLIP-Tiny-ViT-16'.
        backbone (str, optional): the DeCLIP image tower: a DeCLIPViT checkpoint (its mode and scale are restored,
            but the segmentation protocol's ``mode`` and ``attn_scale`` below win), a CLIP weights file or an
            open_clip tag; None = random init (tests). Defaults to None.
        text_weights (str, optional): the ORIGINAL CLIP weights for the text tower (tag or file); None = random
            init (tests). Defaults to None.
        device (str | torch.device): 'cpu', 'cuda', 'cuda:1', ... Defaults to 'cpu'.
        precision (str): 'auto' (reduced precision only where it is fast: ``precision.py``), 'fp32', 'bf16',
            'fp16'. Defaults to 'auto'.
        mode (str, optional): the dense features' mode; None = the protocol's 'csa' (the authors').
            Defaults to None.
        attn_scale (float | str, optional): the attention scale; None = the protocol's '1/sqrt(d)' (the authors'),
            or with the onnxruntime backend the export's. Defaults to None.
        logit_scale (float, optional): scale of the cosine logits; None = the protocol's 40 (the benchmarks' except
            VOC21's 80). Defaults to None.
        bg_thresh (float, optional): with a named background, pixels whose best class probability is below it are
            background; None = the protocol's 0.2 (COCO-Object's); without a background there is no threshold.
            Defaults to None.
        window (int, optional): sliding-window side in network pixels; 0 = the whole image; None = the protocol's
            336. Defaults to None.
        stride (int, optional): sliding-window stride in network pixels; None = the protocol's 112.
            Defaults to None.
        short_side (int, optional): the network input's short side (``image_size.py``); None = the protocol's 448.
            Defaults to None.
        max_long_side (int, optional): the network input's longest side at most; None = the protocol's 4096.
            Defaults to None.
        min_short_side (int): the short side of very elongated images at least. Defaults to 224.
        max_aspect (float): images more elongated than this are refused. Defaults to 64.0.
        max_output_pixels (int, optional): outputs larger than this are downscaled (0 = never); None =
            ``image_size.MAX_OUTPUT_PIXELS`` (4 MP). Defaults to None.
        templates (str | Sequence[str]): the text prompts. Defaults to 'imagenet80'.
        backend (str): 'pytorch', or 'onnxruntime' to run the towers of an ONNX export folder given as ``backbone``
            (``declip-mm export --onnx``; its text tower too, so no ``text_weights``; CPU, fp32; ``mode`` None = the
            export's). Defaults to 'pytorch'.
        **segmentor_kwargs: more ``TrainingFreeSegmentor`` arguments (e.g. ``test_cfg``).
    """

    backend = 'pytorch'

    def __init__(self, model_name: str = TINY_MODELS[0], backbone: Optional[str] = None,
                 text_weights: Optional[str] = None, device='cpu', precision: str = 'auto', mode: Optional[str] = None,
                 attn_scale=None, logit_scale: Optional[float] = None, bg_thresh: Optional[float] = None,
                 window: Optional[int] = None, stride: Optional[int] = None, short_side: Optional[int] = None,
                 max_long_side: Optional[int] = None, min_short_side: int = 224, max_aspect: float = MAX_ASPECT,
                 max_output_pixels: Optional[int] = None, templates: Union[str, Sequence[str]] = 'imagenet80',
                 backend: str = 'pytorch', **segmentor_kwargs):
        protocol = SEGMENTATION_PROTOCOL
        check_backend(backend, device, precision)
        if backend == 'onnxruntime':
            if text_weights is not None:
                raise ValueError('text_weights: the onnxruntime backend runs the text tower of the export folder')
            backbone_cfg, text_cfg, manifest = onnx_towers(backbone, model_name, mode, attn_scale, templates=templates)
            mode, precision = manifest['mode'], 'fp32'
        else:
            warn_if_random(model_name, backbone=backbone, text_weights=text_weights)
            backbone_cfg = dict(type='DeCLIPViT', model_name=model_name, pretrained=backbone, trainable='none',
                                attn_scale=protocol.or_default('attn_scale', attn_scale))
            text_cfg = dict(type='OpenCLIPTextEncoder', model_name=model_name, pretrained=text_weights,
                            templates=templates, synonym_reduce='max')
        segmentor_kwargs.setdefault('test_cfg', protocol.test_cfg(window, stride))
        segmentor_kwargs = dict(mode=protocol.or_default('mode', mode),
                                logit_scale=protocol.or_default('logit_scale', logit_scale), **segmentor_kwargs)
        size_rule = dict(short_side=protocol.or_default('short_side', short_side),
                         max_long_side=protocol.or_default('max_long_side', max_long_side),
                         min_short_side=min_short_side, max_aspect=max_aspect)
        self.backend = backend
        self._setup(backbone_cfg, text_cfg, segmentor_kwargs, device, precision,
                    protocol.or_default('bg_thresh', bg_thresh), size_rule, max_output_pixels)

    @classmethod
    def from_config(cls, config, checkpoint: Optional[str] = None, device='cpu', precision: str = 'auto',
                    bg_thresh: Optional[float] = None, max_output_pixels: Optional[int] = None,
                    min_short_side: int = 224, max_aspect: float = MAX_ASPECT) -> 'OpenVocabSegmenter':
        """From a training-free segmentation config (a path or an mmengine Config) and optionally a checkpoint
        (as ``tools/test.py`` takes it: a DeCLIPViT checkpoint, a whole-model checkpoint or a CLIP weights file).
        Its model, text tower, logit scale, windows and test resize are used; its class list is not (the
        vocabulary comes with each call); ``bg_thresh`` None = the config's, or 0.2 where it has none."""
        from mmengine.config import Config

        from ..engine.runner_setup import attach_checkpoint
        cfg = Config.fromfile(str(config)) if not isinstance(config, Config) else config.copy()
        model = cfg.model
        if model.get('type') not in ('TrainingFreeSegmentor', 'declip_mm.TrainingFreeSegmentor'):
            raise ValueError(f"{config}: model.type is '{model.get('type')}', not a TrainingFreeSegmentor "
                             'config (configs/segmentation/)')
        cfg.load_from = None
        if checkpoint is not None:
            attach_checkpoint(cfg, checkpoint)
        kwargs = {k: v for k, v in model.items() if k not in ('type', 'backbone', 'text_encoder', 'class_names',
                                                                 'bg_thresh', 'bg_index', 'data_preprocessor')}
        pre = model.get('data_preprocessor', {})
        kwargs['data_preprocessor'] = dict(type='mmseg.SegDataPreProcessor',
                                           mean=list(pre.get('mean', CLIP_MEAN_255_ROUNDED)),
                                           std=list(pre.get('std', CLIP_STD_255_ROUNDED)), bgr_to_rgb=False)
        protocol = SEGMENTATION_PROTOCOL
        threshold = (model.get('bg_thresh') or protocol.bg_thresh) if bg_thresh is None else bg_thresh
        resize = next((t for t in cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
                       if t.get('type') in ('Resize', 'mmseg.Resize')),
                      dict(scale=(protocol.max_long_side, protocol.short_side)))
        long_side, short = max(resize['scale']), min(resize['scale'])
        self = cls.__new__(cls)
        self._setup(model.backbone, model.text_encoder, kwargs, device, precision, threshold,
                    dict(short_side=short, max_long_side=long_side, min_short_side=min_short_side,
                         max_aspect=max_aspect), max_output_pixels, load_from=cfg.load_from)
        return self

    def _setup(self, backbone_cfg, text_cfg, segmentor_kwargs, device, precision, bg_thresh, size_rule,
               max_output_pixels, load_from=None):
        from ..registry import MODELS
        self.device = check_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.bg_thresh = float(bg_thresh)
        self.size_rule = size_rule
        self.max_output_pixels = MAX_OUTPUT_PIXELS if max_output_pixels is None else max_output_pixels
        self.text_encoder = MODELS.build(text_cfg) if isinstance(text_cfg, dict) else text_cfg
        placeholder = ['object']                                 # replaced by each call's vocabulary
        self.model = build_segmentor(backbone_cfg, self.text_encoder, placeholder, bg_thresh=0.0, **segmentor_kwargs)
        if load_from:
            from mmengine.runner import load_checkpoint
            load_checkpoint(self.model, load_from, map_location='cpu', strict=True)
        self.model.to(self.device).eval()
        self.text_encoder.to(self.device)
        self.vocabulary: Optional[Vocabulary] = None
        self._lock = threading.RLock()        # one call at a time: a call sets the model's vocabulary, then runs

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, vocabulary: VocabularySpec, background: Optional[str] = None) -> Vocabulary:
        """Encode a vocabulary (``vocabulary.py`` rules) and make the segmentor use it; returns it parsed."""
        with self._lock:
            return self._set_vocabulary(vocabulary, background)

    def _set_vocabulary(self, vocabulary, background):
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else parse_vocabulary(vocabulary, background)
        if isinstance(vocabulary, Vocabulary) and background is not None and vocab.background != background:
            raise ValueError(f"background '{background}' given with a parsed vocabulary whose background is "
                             f"{vocab.background!r}")
        if vocab == self.vocabulary:
            return vocab
        with torch.no_grad():
            classes = self.text_encoder(vocab.classes)
        self.model.set_class_vocabulary(classes, bg_index=vocab.background_index or 0)
        self.vocabulary = vocab
        return vocab

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_probs(self, image: np.ndarray, out_hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, tuple]:
        """RGB uint8 (H, W, 3) -> (labels (h, w), probs (K, h, w), network input size) at ``out_hw`` = (h, w),
        with the current vocabulary: :func:`segment_image` at the input size of ``image_size.py``'s rules."""
        h, w = image.shape[:2]
        in_hw = segmentation_input_size(h, w, **self.size_rule)
        # the threshold exists only with a named background (never the class that happens to come first)
        self.model.bg_thresh = self.bg_thresh if self.vocabulary.background_index is not None else 0.0
        labels, probs = segment_image(self.model, image, input_size=in_hw, output_size=out_hw,
                                      precision=self.precision)
        return labels, probs.numpy(), in_hw

    def __call__(self, image, vocabulary: Optional[VocabularySpec] = None, background: Optional[str] = None):
        """Segment ``image`` (RGB uint8 (H, W, 3) array, PIL image or path; or a list of them -> a list) with
        ``vocabulary`` (None = the last one set) -> :class:`SegmentationResult`. Thread-safe (calls are serialised)."""
        with self._lock:
            return self._segment(image, vocabulary, background)

    def _segment(self, image, vocabulary, background):
        if vocabulary is not None:
            self._set_vocabulary(vocabulary, background)
        elif self.vocabulary is None:
            raise ValueError('give a vocabulary, e.g. seg(image, "cat,dog")')
        elif background is not None and background != self.vocabulary.background:
            raise ValueError('background given without its vocabulary: pass both')
        if isinstance(image, (list, tuple)):
            return [self._segment(im, None, None) for im in image]
        rgb = as_rgb_image(image)
        h, w = rgb.shape[:2]
        out_h, out_w = output_size(h, w, self.max_output_pixels, channels=len(self.model.text_embeddings))
        labels, probs, in_hw = self.predict_probs(rgb, (out_h, out_w))
        if (out_h, out_w) != (h, w):
            import mmcv
            rgb = mmcv.imresize(rgb, (out_w, out_h), interpolation='area', backend='cv2')
        vocab = self.vocabulary
        return SegmentationResult(labels=labels, probs=probs, class_names=list(vocab.names),
                                  background=vocab.background, image=rgb, input_shape=in_hw, source_shape=(h, w))
