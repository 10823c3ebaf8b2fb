"""F-ViT's open-vocabulary RoI head (CLIPSelf ``F-ViT/models/fvit_head.py`` @1c7fe9c), on mmdet 3.x parts.

Training: the box branch of a ConvFC head gives an embedding e (ReLU'd, the width of the CLIP joint space);
class logits are ``T_det * cos(e, t_c)`` against fixed text embeddings t (K classes + 'background' last), with a
learned temperature T_det (init 50); loss: :class:`OVCrossEntropyLoss`.

Test: the dense CLIP map F (L2-normalised per pixel) is pooled at every proposal (RoIAlign 1x1), normalised, and
the two class distributions are fused geometrically, background counting as a base class:

    p_det = softmax(T_det * cos(e, t)),  p_vlm = softmax(T_vlm * cos(f, t))
    score_c = p_det_c^(1 - alpha) * p_vlm_c^alpha    (base classes and background)
    score_c = p_det_c^(1 - beta)  * p_vlm_c^beta     (novel classes: weight 0 in the loss)

These scores go to NMS as they are (no second softmax, no renormalisation).
"""
import difflib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import get_box_tensor, scale_boxes
from mmengine.structures import InstanceData
from torch import nn

from ...registry import MODELS
from ...vocabularies.detection import class_names_from
from ..losses.ov_cross_entropy import ZERO_WEIGHT
from ..text.embedding_file import BACKGROUND, load_class_embeddings


def check_class_embedding_names(path: str, class_names: Sequence[str], source: str = 'the dataset') -> None:
    """Refuse a class-embedding file whose names do not cover ``class_names`` + 'background', naming the file, the
    first index that disagrees and both names. Formats (what ``load_class_embeddings`` reads):

    - ours (``tools/dump_class_embeddings.py``): ``{'names': [...], 'embeddings': (K + 1, D)}``, names in label
      order then 'background': must equal ``class_names + ['background']`` exactly;
    - CLIPSelf's (``F-ViT/tools/dump_{lvis,coco}_openclip_feature.py`` @1c7fe9c): a dict name -> (D,) float32
      tensor, keys = the annotation file's categories sorted by id, then 'background'; the head picks its classes
      by name (CLIPSelf's 81-key COCO file serves the 65 OV-COCO classes), so every class must be a key.
    """
    data = torch.load(path, map_location='cpu', weights_only=True)
    wanted: List[str] = list(class_names) + [BACKGROUND]
    if isinstance(data, dict) and 'names' in data and 'embeddings' in data:
        names, kind = list(data['names']), 'names'
        if names == wanted:
            return
        i = next((i for i, (a, b) in enumerate(zip(names, wanted)) if a != b), min(len(names), len(wanted)))
    elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in data.values()):
        names, kind = [str(k) for k in data], 'keys'
        present = set(names)
        missing = [i for i, n in enumerate(wanted) if n not in present]
        if not missing:
            return
        i = missing[0]
    elif isinstance(data, torch.Tensor):
        raise ValueError(f'{path}: a bare ({", ".join(map(str, data.shape))}) tensor has no class names to check '
                         f'against {source}; save it as a dict name -> vector (CLIPSelf\'s format) or with '
                         'tools/dump_class_embeddings.py')
    else:
        return                                                  # not a class-embedding file: the loader says so
    want = wanted[i] if i < len(wanted) else None
    if kind == 'keys' and len(names) != len(wanted):            # a by-name file of another size: the closest key
        close = difflib.get_close_matches(want, names, n=1, cutoff=0.6) if want else []
        got = f"no key '{want}' (closest: '{close[0]}')" if close else f"no key '{want}'"
        where = f'the file ({len(names)} {kind}) has {got}'
    else:
        got = names[i] if i < len(names) else None
        where = f"the file's {kind} ({len(names)}) have '{got}' at index {i}"
    raise ValueError(f"{path}: class {i} is '{want}' in {source} ({len(wanted)} names with background), but {where}. "
                     'LVIS names are the official ones (annotation files, CLIPSelf); rebuild the file with '
                     'tools/dump_class_embeddings.py --classes <the annotation json> or set class_names to the '
                     'annotation json the file was dumped from')


class FeatureMaps(tuple):
    """The neck's maps, carrying the backbone's dense CLIP map as ``.vlm`` (B, D, h, w) to the RoI head.
    Slices are plain tuples, so mmdet's RoI extractors (which take ``x[:num_inputs]``) never see it."""

    def __new__(cls, maps, vlm: Optional[torch.Tensor] = None):
        obj = super().__new__(cls, maps)
        obj.vlm = vlm
        return obj


@MODELS.register_module()
class TextEmbeddingClassifier(nn.Module):
    """``T * cos(x, t_c)`` against fixed class text embeddings t (K + 1 rows, 'background' last): mmdet's
    ``cls_predictor_cfg`` (it receives ``in_features`` and ``out_features`` from the bbox head).

    Args:
        in_features (int): the class branch's output width (set by the bbox head: ``fc_out_channels``); it must
            equal the embeddings' dimension.
        out_features (int): K + 1 (set by the bbox head: ``num_classes + 1``).
        embeddings (str): the class-embedding file (``tools/dump_class_embeddings.py`` or CLIPSelf's dict format).
        class_names (str | Sequence[str]): the dataset's classes in label order: a list, 'ov_coco_65', 'lvis_v1'
            (the official names) or a json (an annotation file's categories sorted by id, or an LVIS category-info
            list); the file must hold each of them and 'background' (:func:`check_class_embedding_names`).
        temperature (float): initial T. Defaults to 50.0.
        learn_temperature (bool): make T a parameter (CLIPSelf's default) rather than a constant.
            Defaults to True.
    """

    def __init__(self, in_features: int, out_features: int, embeddings: str, class_names: Sequence[str],
                 temperature: float = 50.0, learn_temperature: bool = True):
        super().__init__()
        self.class_names = class_names_from(class_names)
        source = f"class_names '{class_names}'" if isinstance(class_names, str) else 'class_names'
        check_class_embedding_names(embeddings, self.class_names, source)      # clear errors: file, index, names
        text = load_class_embeddings(embeddings, self.class_names)             # (K + 1, D), normalised
        if text.shape[0] != out_features:
            raise ValueError(f'{embeddings}: {text.shape[0]} class embeddings for a head with {out_features} '
                             'outputs (K classes + background)')
        self.in_features, self.source = in_features, embeddings
        self.register_buffer('text', text, persistent=False)
        t = torch.tensor(float(temperature))
        self.temperature = nn.Parameter(t) if learn_temperature else None
        if not learn_temperature:
            self.register_buffer('fixed_temperature', t, persistent=False)

    @property
    def scale(self) -> torch.Tensor:
        return self.temperature if self.temperature is not None else self.fixed_temperature

    def check_dim(self, dim: int, what: str) -> None:
        if dim != self.text.shape[1]:
            raise ValueError(f'{self.source}: class embeddings of dimension {self.text.shape[1]}, but {what} '
                             f'{dim}-d; set fc_out_channels (and the CLIP map) to the CLIP embedding dimension')

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, K + 1) cosines with the class embeddings."""
        self.check_dim(x.shape[-1], 'the features are')
        return F.normalize(x, dim=-1) @ self.text.to(x.dtype).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(x)


@MODELS.register_module()
class FViTBBoxHead(ConvFCBBoxHead):
    """CLIPSelf's ``FViTBBoxHead``: 4 shared convs, 2 shared fcs, one class fc (ReLU kept) whose output is
    compared with the text embeddings (``cls_predictor_cfg=dict(type='TextEmbeddingClassifier', ...)``),
    class-agnostic regression; at test, the fusion with the CLIP region scores (module doc).

    The novel classes are those the classification loss gives weight 0 (``loss_cls.class_weight``).

    Args:
        vlm_temperature (float): T_vlm, the temperature of the CLIP region scores (OV-COCO 75, OV-LVIS 50).
            Defaults to 75.0.
        alpha (float): the CLIP exponent for base (and background) classes. Defaults to 0.1.
        beta (float): the CLIP exponent for novel classes. Defaults to 0.8.
        num_shared_convs (int): shared 3x3 convs. Defaults to 4.
        num_shared_fcs (int): shared fcs. Defaults to 2.
        num_cls_fcs (int): class-branch fcs (its output is compared with the text embeddings). Defaults to 1.
        num_reg_fcs (int): regression-branch fcs. Defaults to 1.
        **kwargs: mmdet ``ConvFCBBoxHead`` arguments; ``cls_predictor_cfg`` must be a ``TextEmbeddingClassifier``
            config, ``loss_cls`` a loss with K + 1 class weights (``OVCrossEntropyLoss``) and
            ``reg_class_agnostic`` True.
    """

    def __init__(self, vlm_temperature: float = 75.0, alpha: float = 0.1, beta: float = 0.8,
                 num_shared_convs: int = 4, num_shared_fcs: int = 2, num_cls_fcs: int = 1, num_reg_fcs: int = 1,
                 **kwargs):
        super().__init__(num_shared_convs=num_shared_convs, num_shared_fcs=num_shared_fcs, num_cls_fcs=num_cls_fcs,
                         num_reg_fcs=num_reg_fcs, **kwargs)
        if not isinstance(self.fc_cls, TextEmbeddingClassifier):
            raise ValueError("FViTBBoxHead needs cls_predictor_cfg=dict(type='TextEmbeddingClassifier', ...)")
        self.fc_cls.check_dim(self.cls_last_dim, 'the class branch (fc_out_channels) gives')
        weights = getattr(self.loss_cls, 'class_weight', None)
        if weights is None or len(weights) != self.num_classes + 1:
            raise ValueError('FViTBBoxHead needs a loss_cls with K + 1 class weights (OVCrossEntropyLoss): the '
                             'zero-weight classes are the novel ones')
        if not self.reg_class_agnostic:
            raise ValueError('FViTBBoxHead regresses class-agnostic boxes (reg_class_agnostic=True), as F-ViT')
        self.register_buffer('novel', torch.tensor(weights) < ZERO_WEIGHT, persistent=False)
        self.novel[-1] = False                                            # background fuses as a base class
        self.vlm_temperature, self.alpha, self.beta = vlm_temperature, alpha, beta

    def forward(self, x: torch.Tensor, vlm_feats: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """RoI features (N, C, 7, 7) -> (class logits (N, K + 1), box deltas (N, 4)); with the CLIP region
        features ``vlm_feats`` (N, D), the fused class scores instead of the logits."""
        cls_score, bbox_pred = super().forward(x)
        if vlm_feats is not None:
            cls_score = self.fuse(cls_score, vlm_feats)
        return cls_score, bbox_pred

    def fuse(self, cls_score: torch.Tensor, vlm_feats: torch.Tensor) -> torch.Tensor:
        """Geometric fusion (module doc): logits (N, K + 1), CLIP region features (N, D) -> scores (N, K + 1)."""
        p_det = cls_score.float().softmax(dim=-1)
        p_vlm = (self.vlm_temperature * self.fc_cls.cosine(vlm_feats.float())).softmax(dim=-1)
        exponent = torch.where(self.novel.to(p_det.device), self.beta, self.alpha)
        return p_det ** (1 - exponent) * p_vlm ** exponent

    def _predict_by_feat_single(self, roi: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor,
                                img_meta: dict, rescale: bool = False, rcnn_test_cfg=None) -> InstanceData:
        """mmdet's ``BBoxHead._predict_by_feat_single`` without its softmax: ``cls_score`` already holds the
        fused scores. Boxes are decoded from the proposals, rescaled, then per-class NMS (background dropped)."""
        if roi.shape[0] == 0:
            return empty_instances([img_meta], roi.device, task_type='bbox', box_type=self.predict_box_type,
                                   use_box_type=False, num_classes=self.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)[0]
        bboxes = self.bbox_coder.decode(roi[..., 1:], bbox_pred.view(-1, self.bbox_coder.encode_size),
                                        max_shape=img_meta['img_shape'])
        if rescale and bboxes.size(0) > 0:
            bboxes = scale_boxes(bboxes, [1 / s for s in img_meta['scale_factor']])
        bboxes = get_box_tensor(bboxes)
        box_dim = bboxes.size(-1)
        bboxes = bboxes.view(roi.size(0), -1)
        results = InstanceData()
        if rcnn_test_cfg is None:
            results.bboxes, results.scores = bboxes, cls_score
            return results
        det_bboxes, det_labels = multiclass_nms(bboxes, cls_score, rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
                                                rcnn_test_cfg.max_per_img, box_dim=box_dim)
        results.bboxes, results.scores, results.labels = det_bboxes[:, :-1], det_bboxes[:, -1], det_labels
        return results


@MODELS.register_module()
class FViTRoIHead(StandardRoIHead):
    """``StandardRoIHead`` that, when predicting, also pools the backbone's dense CLIP map (``x.vlm``, see
    :class:`FeatureMaps`; required there) at the proposals with ``vlm_roi_extractor`` (RoIAlign 1x1 at the patch
    stride) and hands it to the bbox head for the fusion. Training is the standard one (no CLIP map).

    Args:
        vlm_roi_extractor (dict): RoI extractor config for the CLIP map (``SingleRoIExtractor`` with RoIAlign 1x1,
            ``featmap_strides=[patch size]``, ``out_channels`` = the CLIP joint dimension).
        **kwargs: mmdet ``StandardRoIHead`` arguments (``bbox_roi_extractor``, ``bbox_head``: an
            ``FViTBBoxHead``, ``train_cfg``, ``test_cfg``, ...).
    """

    def __init__(self, vlm_roi_extractor: dict, **kwargs):
        super().__init__(**kwargs)
        self.vlm_roi_extractor = MODELS.build(vlm_roi_extractor)

    def _bbox_forward(self, x, rois: torch.Tensor) -> dict:
        bbox_feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            bbox_feats = self.shared_head(bbox_feats)
        vlm = getattr(x, 'vlm', None)
        vlm_feats = None if vlm is None else self.vlm_roi_extractor([vlm], rois).flatten(1)       # (N, D)
        cls_score, bbox_pred = self.bbox_head(bbox_feats, vlm_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def predict_bbox(self, x, *args, **kwargs):
        if getattr(x, 'vlm', None) is None:
            raise ValueError('FViTRoIHead predicts with the CLIP map of the backbone, which the FViT detector '
                             'passes (FeatureMaps); without it the class scores would be raw logits')
        return super().predict_bbox(x, *args, **kwargs)
