"""``OpenVocabDetector``: F-ViT (a trained detection config + checkpoint) with any vocabulary, in one call.

    from declip_mm.apis import OpenVocabDetector
    det = OpenVocabDetector('configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py', 'best_novel_ap50.pth',
                            text_weights='merged2b_s8b_b131k', device='cuda')
    res = det('photo.jpg', 'cat,dog,sofa; couch')      # res.boxes (N, 4) xyxy, res.scores (N,), res.labels (N,)

The vocabulary goes through the ORIGINAL CLIP text tower as ``tools/dump_class_embeddings.py`` writes class
embeddings: the 63 ViLD prompts, each name's prompt embeddings averaged and normalised, 'background' added last
(synonyms 'sofa; couch': their embeddings averaged into one class). F-ViT's test-time fusion gives a class the
detector was trained on (a base class of the config: class weight > 0) the CLIP exponent alpha and every other
class beta, as for the benchmarks' novel classes. The image goes through the config's test resize and the
detector's data preprocessor; the boxes are in the image's pixels.
"""
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .image_size import MAX_ASPECT, check_aspect
from .inputs import as_rgb_image
from .precision import autocast, check_device, resolve_precision
from .random_weights import warn_if_random
from .visualization import detection_overlay
from .vocabulary import Vocabulary, parse_vocabulary


@dataclass
class DetectionResult:
    """boxes: (N, 4) float32 xyxy in the image's pixels; scores: (N,) float32; labels: (N,) int64 indices into
    class_names (each class's first synonym); image: (H, W, 3) uint8 (for the overlay)."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    image: np.ndarray = field(repr=False)

    def __len__(self):
        return len(self.scores)

    def detections(self) -> List[Dict]:
        return [dict(label=self.class_names[int(c)], score=float(s), box_xyxy=[float(v) for v in b])
                for b, s, c in zip(self.boxes, self.scores, self.labels)]

    def summary(self) -> Dict:
        return dict(class_names=self.class_names, image_size=list(self.image.shape[:2]), detections=self.detections())

    def overlay(self, line_width: int = 2, note: Optional[str] = None):
        """A PIL image: the photo with each box, its class and score; ``note`` on a red band on top."""
        return detection_overlay(self.image, self.boxes, self.scores, self.labels, self.class_names,
                                 line_width=line_width, note=note)


class OpenVocabDetector:
    """F-ViT detection with a user vocabulary (module doc).

    Args:
        config (str | mmengine.Config): an F-ViT config (``configs/detection/``), path or mmengine Config.
        checkpoint (str, optional): the trained detector (a whole-model checkpoint of that config); None = the
            config's weights (its backbone file, a randomly initialised head: tests). Defaults to None.
        text_weights (str, optional): the ORIGINAL CLIP weights of the backbone's open_clip model (tag or file);
            None = random. Defaults to None.
        backbone (str, optional): override the config's ``model.backbone.pretrained`` ('' = random init, for
            tests); None keeps the config's. Defaults to None.
        device (str | torch.device): as :class:`OpenVocabSegmenter`. Defaults to 'cpu'.
        precision (str): as :class:`OpenVocabSegmenter`; reduced precision runs the ViT, the heads run fp32.
            Defaults to 'auto'.
        score_thr (float, optional): keep detections scoring at least this (None = the config's
            ``test_cfg.rcnn.score_thr``). Defaults to None.
        base_classes (Sequence[str], optional): the classes the detector was trained on (None = the config's
            classes of weight > 0). Defaults to None.
        max_aspect (float): images more elongated than this are refused. Defaults to 64.0.
    """

    def __init__(self, config, checkpoint: Optional[str] = None, text_weights: Optional[str] = None,
                 backbone: Optional[str] = None, device='cpu', precision: str = 'auto',
                 score_thr: Optional[float] = None, base_classes: Optional[Sequence[str]] = None,
                 max_aspect: float = MAX_ASPECT):
        from mmengine.config import Config
        from mmengine.registry import init_default_scope

        from ..engine.runner_setup import attach_checkpoint
        from ..registry import MODELS
        cfg = Config.fromfile(str(config)) if not isinstance(config, Config) else config.copy()
        init_default_scope(cfg.get('default_scope', 'mmdet'))           # the config's bare names are mmdet's
        model = cfg.model
        if model.get('type') not in ('FViT', 'declip_mm.FViT'):
            raise ValueError(f"{config}: model.type is '{model.get('type')}', not an F-ViT config (configs/detection/)")
        if backbone is not None:
            model.backbone.pretrained = backbone or None
        cfg.load_from = None
        if checkpoint is not None and attach_checkpoint(cfg, checkpoint) != 'load_from':
            raise ValueError(f'{checkpoint} is not a whole-model F-ViT checkpoint (only its backbone); a detector '
                             'needs its trained heads: give the checkpoint of a detection training run')
        self.device = check_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.max_aspect = max_aspect
        head = model.roi_head.bbox_head
        self.base_names = self._base_classes(head) if base_classes is None else [str(c) for c in base_classes]
        warn_if_random(model.backbone.model_name, text_weights=text_weights, checkpoint=checkpoint)
        self.text_encoder = MODELS.build(dict(type='OpenCLIPTextEncoder', model_name=model.backbone.model_name,
                                              pretrained=text_weights, templates='vild', synonym_reduce='mean'))
        self.text_encoder.to(self.device)

        # built with a one-class placeholder vocabulary; each call's vocabulary replaces it
        from ..models.text.embedding_file import BACKGROUND, save_class_embeddings
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            path = str(Path(tmp) / 'placeholder.pt')
            save_class_embeddings(path, ['object', BACKGROUND], self.text_encoder.embed_synonyms(['object', BACKGROUND]))
            head.num_classes = 1
            head.cls_predictor_cfg.update(embeddings=path, class_names=['object'])
            head.loss_cls = dict(type='OVCrossEntropyLoss', class_weight=[1.0, 1.0])
            self.model = MODELS.build(model)
        if cfg.load_from:
            from mmengine.runner import load_checkpoint
            load_checkpoint(self.model, cfg.load_from, map_location='cpu', strict=True)
        self.model.to(self.device).eval()
        if score_thr is not None:
            self.model.roi_head.test_cfg.score_thr = float(score_thr)
        self.pipeline = self._test_pipeline(cfg)
        self.vocabulary: Optional[Vocabulary] = None
        self._lock = threading.RLock()        # one call at a time: a call sets the head's vocabulary, then runs

    @staticmethod
    def _base_classes(head) -> List[str]:
        from ..vocabularies.detection import class_names_from
        from ..models.losses.ov_cross_entropy import ZERO_WEIGHT, OVCrossEntropyLoss
        try:
            names = class_names_from(head.cls_predictor_cfg.class_names)
            loss = dict(head.loss_cls)
            loss.pop('type', None)
            weights = OVCrossEntropyLoss(**loss).class_weight
        except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"cannot read the detector's training classes from its config ({err}); pass "
                             'base_classes=[...] (the classes it was trained on, [] for none)') from err
        return [n for n, w in zip(names, weights) if w >= ZERO_WEIGHT]

    @staticmethod
    def _test_pipeline(cfg):
        from mmcv.transforms import Compose
        steps = [t for t in cfg.test_dataloader.dataset.pipeline
                 if t['type'].split('.')[-1] not in ('LoadImageFromFile', 'LoadAnnotations')]
        return Compose([dict(t, type=t['type'] if '.' in t['type'] else f"mmdet.{t['type']}") for t in steps])

    def set_vocabulary(self, vocabulary) -> Vocabulary:
        """Encode a vocabulary (``vocabulary.py`` rules; detection has no background class: the detector's own
        'background' is always added) and make the head use it."""
        with self._lock:
            return self._set_vocabulary(vocabulary)

    def _set_vocabulary(self, vocabulary) -> Vocabulary:
        from ..models.text.embedding_file import BACKGROUND
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else parse_vocabulary(vocabulary)
        if vocab.background_index is not None:
            raise ValueError('a detection vocabulary has no background class (F-ViT adds its own)')
        if any(n.lower() == BACKGROUND for c in vocab.classes for n in c.split(';')):
            raise ValueError(f"'{BACKGROUND}' is F-ViT's own class, added last; leave it out of the vocabulary")
        if vocab == self.vocabulary:
            return vocab
        with torch.no_grad():
            classes = self.text_encoder(vocab.classes).embeddings                           # (K, D), normalised
            background = self.text_encoder.embed_synonyms([BACKGROUND])
        bbox_head = self.model.roi_head.bbox_head
        bbox_head.fc_cls.text = torch.cat([classes, background]).to(self.device)
        base = {' '.join(n.lower().split()) for n in self.base_names}
        novel = [not any(' '.join(s.lower().split()) in base for s in c.split(';')) for c in vocab.classes]
        bbox_head.novel = torch.tensor(novel + [False], device=self.device)
        bbox_head.num_classes = len(vocab)
        self.vocabulary = vocab
        return vocab

    @torch.no_grad()
    def __call__(self, image, vocabulary=None) -> Union[DetectionResult, List[DetectionResult]]:
        """Detect ``vocabulary``'s classes in ``image`` (RGB uint8 array, PIL image or path; a list -> a list).
        Thread-safe (calls are serialised)."""
        with self._lock:
            return self._detect(image, vocabulary)

    def _detect(self, image, vocabulary):
        if vocabulary is not None:
            self._set_vocabulary(vocabulary)
        elif self.vocabulary is None:
            raise ValueError('give a vocabulary, e.g. det(image, "cat,dog")')
        if isinstance(image, (list, tuple)):
            return [self._detect(im, None) for im in image]
        rgb = as_rgb_image(image)
        h, w = rgb.shape[:2]
        check_aspect(h, w, self.max_aspect)
        data = self.pipeline(dict(img=np.ascontiguousarray(rgb[..., ::-1]), img_shape=(h, w), ori_shape=(h, w),
                                  img_id=0, img_path=''))
        batch = self.model.data_preprocessor(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), False)
        pred = self._predict(batch['inputs'], batch['data_samples'])[0].pred_instances
        return DetectionResult(boxes=pred.bboxes.float().cpu().numpy().reshape(-1, 4),
                               scores=pred.scores.float().cpu().numpy(), labels=pred.labels.cpu().numpy().astype(np.int64),
                               class_names=list(self.vocabulary.names), image=rgb)

    def _predict(self, inputs, samples):
        """``FViT.predict`` with the ViT under ``precision`` and the pyramid, RPN and RoI head in fp32 (mmcv's
        RoIAlign has no bf16 kernel)."""
        from ..models.detectors.fvit_heads import FeatureMaps
        model = self.model
        with autocast(self.precision, self.device):
            outputs = model.backbone(inputs)
        outputs = tuple(o.float() for o in outputs)
        feats = model.neck(outputs) if model.with_neck else outputs
        vlm = torch.nn.functional.normalize(outputs[-1], dim=1)
        proposals = model.rpn_head.predict(feats, samples, rescale=False)
        results = model.roi_head.predict(FeatureMaps(feats, vlm), proposals, samples, rescale=True)
        return model.add_pred_to_datasample(samples, results)
