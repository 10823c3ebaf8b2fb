"""detectron2's semantic-segmentation mIoU (``SemSegEvaluator``), which CAT-Seg and DeCLIP's CAT-Seg numbers use.

The per-class areas are mmseg's (``IoUMetric.intersect_and_union``: ignore pixels dropped, predictions outside the
classes dropped); only the averaging differs: detectron2 averages IoU and accuracy over the classes PRESENT in the
ground truth (``pos_gt > 0``), where mmseg's ``nanmean`` also counts a class that is predicted but absent from
every label as IoU 0. With large vocabularies (ADE-847, PC-459) mmseg's number is therefore lower.

Reported (percent): mIoU, fwIoU (IoU weighted by GT frequency), mACC, pACC, as detectron2 names them.
"""
from typing import Dict, Optional

import numpy as np
from mmseg.evaluation import IoUMetric

from ..registry import METRICS


def d2_segmentation_metrics(intersect, union, pred_area, gt_area) -> Dict[str, float]:
    """Summed per-class areas (K,) -> detectron2's mIoU / fwIoU / mACC / pACC (percent) and per-class IoU (nan where
    the class is absent from the ground truth or has no union)."""
    intersect, union, gt_area = (np.asarray(a, dtype=np.float64) for a in (intersect, union, gt_area))
    present = gt_area > 0
    valid = present & (union > 0)
    iou = np.full(len(gt_area), np.nan)
    iou[valid] = intersect[valid] / union[valid]
    acc = np.full(len(gt_area), np.nan)
    acc[present] = intersect[present] / gt_area[present]
    weights = gt_area / gt_area.sum() if gt_area.sum() else gt_area
    return dict(mIoU=100 * iou[valid].sum() / max(valid.sum(), 1), fwIoU=100 * (iou[valid] * weights[valid]).sum(),
                mACC=100 * np.nanmean(acc) if present.any() else float('nan'),
                pACC=100 * intersect.sum() / max(gt_area.sum(), 1), IoU=100 * iou)


@METRICS.register_module()
class D2IoUMetric(IoUMetric):
    """mmseg ``IoUMetric`` with detectron2's averaging (module doc); keys ``d2/mIoU``, ``d2/fwIoU``, ``d2/mACC``,
    ``d2/pACC``."""

    default_prefix = 'd2'

    def __init__(self, background_from: Optional[int] = None, **kwargs):
        """background_from: PAS-20b (CAT-Seg's ``VOCbEvaluator``): predicted indices >= it become it (the 20 VOC
        classes + the Context distractors of ``voc20b`` -> 21 classes, background 20)."""
        super().__init__(**kwargs)
        self.background_from = background_from

    def process(self, data_batch, data_samples) -> None:
        if self.background_from is not None:
            for sample in data_samples:
                pred = sample['pred_sem_seg']['data']
                sample['pred_sem_seg']['data'] = pred.clamp(max=self.background_from)
        super().process(data_batch, data_samples)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        intersect, union, pred_area, gt_area = (sum(r[i] for r in results).cpu().numpy() for i in range(4))
        metrics = d2_segmentation_metrics(intersect, union, pred_area, gt_area)
        metrics.pop('IoU')
        return {k: float(np.round(v, 2)) for k, v in metrics.items()}
