"""detectron2's semantic-segmentation mIoU (``SemSegEvaluator``), which CAT-Seg and DeCLIP's CAT-Seg numbers use.

The per-class areas are mmseg's (``IoUMetric.intersect_and_union``: ignore pixels dropped, predictions outside the
classes dropped); only the averaging differs: detectron2 averages IoU and accuracy over the classes PRESENT in the
ground truth (``pos_gt > 0``), where mmseg's ``nanmean`` also counts a class that is predicted but absent from
every label as IoU 0. With large vocabularies (ADE-847, PC-459) mmseg's number is therefore lower.

Reported (percent): mIoU, fwIoU (IoU weighted by GT frequency), mACC, pACC, as detectron2 names them.

Labels keep their full range: the per-class areas are counted in int64 (``d2_areas``; detectron2 reads the labels
with ``dtype=int``), never in the prediction's type (mmseg's ``IoUMetric.process`` casts the label to it), so A-847
(classes 0..846, ignore 65535) and PC-459 (0..458, ignore 459) are exact; a label value that is neither a class
nor ``ignore_index`` raises ``ValueError`` naming the file (detectron2 would fail to reshape its confusion matrix
or count it in a wrong cell). Saved predictions (``output_dir``) are 16-bit PNGs when a class index exceeds 255.
"""
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmseg.evaluation import IoUMetric
from PIL import Image

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


def d2_areas(pred, label, num_classes: int, ignore_index: int, path: str = '<sample>'):
    """Predicted and ground-truth class maps (same shape, any integer type) -> per-class (intersect, union,
    pred_area, gt_area), int64 tensors of length ``num_classes``: ignore pixels dropped, predictions outside the
    classes count for none (mmseg's ``intersect_and_union``), as detectron2's confusion matrix without its ignore
    row and column. A label value that is neither a class nor ``ignore_index``: ``ValueError`` naming ``path``."""
    pred = torch.as_tensor(pred).reshape(-1).long().cpu()
    label = torch.as_tensor(label).reshape(-1).long().cpu()
    if pred.shape != label.shape:
        raise ValueError(f'{path}: prediction of {pred.numel()} pixels for a label of {label.numel()}')
    valid = label != ignore_index
    bad = label[valid & ((label < 0) | (label >= num_classes))]
    if bad.numel():
        values = ', '.join(str(v) for v in bad.unique()[:10].tolist())
        raise ValueError(f'label {path}: values {values} are neither one of the {num_classes} classes nor the '
                         f'ignore index {ignore_index}')
    pred, label = pred[valid], label[valid]
    gt_area = torch.bincount(label, minlength=num_classes)
    pred_area = torch.bincount(pred[(pred >= 0) & (pred < num_classes)], minlength=num_classes)
    intersect = torch.bincount(label[pred == label], minlength=num_classes)
    return intersect, pred_area + gt_area - intersect, pred_area, gt_area


@METRICS.register_module()
class D2IoUMetric(IoUMetric):
    """mmseg ``IoUMetric`` with detectron2's averaging (module doc); keys ``d2/mIoU``, ``d2/fwIoU``, ``d2/mACC``,
    ``d2/pACC``.

    Args:
        background_from (int, optional): PAS-20b (CAT-Seg's ``VOCbEvaluator``): predicted indices >= it become it
            (the 20 VOC classes + the Context distractors of ``voc20b`` -> 21 classes, background 20). None: no
            mapping. Defaults to None.
        **kwargs: mmseg ``IoUMetric`` arguments: ``ignore_index`` (int, default 255; 65535 for A-847, 459 for
            PC-459), ``output_dir`` (str, optional: where predictions are saved as PNGs), ``format_only``,
            ``collect_device``, ``prefix``.
    """

    default_prefix = 'd2'

    def __init__(self, background_from: Optional[int] = None, **kwargs):
        """See the class docstring."""
        super().__init__(**kwargs)
        self.background_from = background_from

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            if self.background_from is not None:
                sample['pred_sem_seg']['data'] = sample['pred_sem_seg']['data'].clamp(max=self.background_from)
            pred = sample['pred_sem_seg']['data'].squeeze()
            if not self.format_only:
                path = sample.get('seg_map_path') or sample.get('img_path') or '<sample without a file name>'
                self.results.append(d2_areas(pred, sample['gt_sem_seg']['data'].squeeze(), num_classes,
                                             self.ignore_index, path))
            if self.output_dir is not None:            # mmseg's, without its cast of the classes to uint8
                mask = pred.cpu().numpy().astype(np.int64)
                if sample.get('reduce_zero_label', False):
                    mask = mask + 1
                mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
                name = osp.splitext(osp.basename(sample['img_path']))[0]
                Image.fromarray(mask).save(osp.abspath(osp.join(self.output_dir, f'{name}.png')))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        intersect, union, pred_area, gt_area = (sum(r[i] for r in results).cpu().numpy() for i in range(4))
        metrics = d2_segmentation_metrics(intersect, union, pred_area, gt_area)
        metrics.pop('IoU')
        return {k: float(np.round(v, 2)) for k, v in metrics.items()}
