"""Open-vocabulary classification loss of F-ViT (CLIPSelf ``F-ViT/models/custom_losses.py``
``CustomCrossEntropyLoss`` @1c7fe9c): softmax cross-entropy over K classes + background with per-class weights,
where the classes of weight 0 (the novel classes, never seen in training) get a logit of -inf, so they take no
probability mass from the base classes:

    loss_i = -w[y_i] * log softmax(s_i with s_ic = -inf where w_c < 1e-5)[y_i]
    loss   = sum_i loss_i * label_weight_i / avg_factor                   (mmdet's bbox-head reduction)

The weights are a list (OV-COCO: 1 for the 48 base, 0 for the 17 novel, 0.6 for background) or an LVIS
category-info json: w_c = 1 if the class has training images (``image_count`` > 0) else 0, then ``bg_weight``.
"""
import json
from typing import Optional, Sequence, Union

import torch
from mmdet.models.losses import CrossEntropyLoss

from ...registry import MODELS

ZERO_WEIGHT = 1e-5   # classes below it are masked with -inf


def class_weights_from_lvis(path: str, bg_weight: float) -> list:
    """[1 if image_count > 0 else 0 for each category in id order] + [bg_weight] from a category-info json
    (a list of categories, or a dict with 'categories')."""
    with open(path) as f:
        data = json.load(f)
    categories = data['categories'] if isinstance(data, dict) else data
    try:
        ordered = sorted(categories, key=lambda c: c['id'])
        return [1.0 if c['image_count'] > 0 else 0.0 for c in ordered] + [float(bg_weight)]
    except (KeyError, TypeError) as err:
        raise KeyError(f"{path}: every category needs 'id' and 'image_count' ({err})") from err


@MODELS.register_module()
class OVCrossEntropyLoss(CrossEntropyLoss):
    """mmdet's softmax ``CrossEntropyLoss`` with the zero-weight classes masked by -inf (see module doc).

    Args:
        class_weight (str | Sequence[float]): K + 1 weights (background last), or the path of an LVIS
            category-info json.
        bg_weight (float, optional): the background weight appended to a json's class weights (LVIS: 0.9); with a
            list it must be None (the list holds it). Defaults to None.
        loss_weight (float): the weight of the loss. Defaults to 1.0.
        reduction (str): 'none', 'mean' or 'sum', as mmdet's ``CrossEntropyLoss``. Defaults to 'mean'.
    """

    def __init__(self, class_weight: Union[str, Sequence[float]], bg_weight: Optional[float] = None,
                 loss_weight: float = 1.0, reduction: str = 'mean'):
        if isinstance(class_weight, str):
            if bg_weight is None:
                raise ValueError(f'class_weight={class_weight!r} is a json: give bg_weight too')
            class_weight = class_weights_from_lvis(class_weight, bg_weight)
        elif bg_weight is not None:
            raise ValueError('bg_weight goes with a json class_weight; a list holds the background weight last')
        super().__init__(use_sigmoid=False, class_weight=list(map(float, class_weight)), reduction=reduction,
                         loss_weight=loss_weight)
        self.register_buffer('masked', torch.tensor(self.class_weight) < ZERO_WEIGHT, persistent=False)

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if cls_score.shape[-1] != len(self.class_weight):
            raise ValueError(f'{cls_score.shape[-1]} class scores but {len(self.class_weight)} class weights')
        masked = self.masked.to(cls_score.device)
        target_masked = masked[label.clamp(0, len(masked) - 1)] & (label >= 0)       # ignore_index is negative
        if target_masked.any():
            bad = sorted(set(label[target_masked].tolist()))
            raise ValueError(f'training targets of classes {bad}, whose weight is 0 (novel): the loss would be '
                             'infinite. Train on base-only annotations (e.g. instances_train2017_seen_2_65_cat.json, '
                             'tools/dataset_converters/ov_coco.py; LVIS without rare annotations)')
        return super().forward(cls_score.masked_fill(masked, float('-inf')), label, *args, **kwargs)
