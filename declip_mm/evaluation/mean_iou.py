"""mmseg ``IoUMetric``'s mIoU on label arrays, without a Runner: ``make demo`` and the proof-of-mechanism project
score their predictions with it (``tools/test.py`` runs the metrics themselves)."""
from typing import Dict, Sequence

import numpy as np


def mean_iou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int,
             ignore_index: int = 255) -> Dict:
    """mmseg IoUMetric's mIoU (areas summed over images, IoU per class, NaN-mean over classes with a union),
    plus each image's own mIoU and the per-class IoUs."""
    def areas(pred, gt):
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
        inter = np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
        area_p = np.bincount(pred, minlength=num_classes)[:num_classes]
        area_g = np.bincount(gt, minlength=num_classes)[:num_classes]
        return inter, area_p + area_g - inter

    def miou(inter, union):
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = inter / union
        return iou, float(np.nanmean(iou) * 100)

    total_i, total_u, per_image = np.zeros(num_classes), np.zeros(num_classes), []
    for pred, gt in zip(preds, gts):
        if pred.shape != gt.shape:
            raise ValueError(f'prediction {pred.shape} and label {gt.shape} differ in shape')
        inter, union = areas(pred.astype(np.int64), gt.astype(np.int64))
        total_i += inter
        total_u += union
        per_image.append(miou(inter, union)[1])
    iou, m = miou(total_i, total_u)
    return dict(mIoU=m, per_image=per_image, per_class=(iou * 100).tolist())
