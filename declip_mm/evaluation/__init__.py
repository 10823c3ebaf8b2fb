"""Metrics mmdet/mmseg lack (or that need a fix to run with the locked stack), and mmseg's mIoU on arrays."""
from .d2_iou_metric import D2IoUMetric, d2_segmentation_metrics
from .lvis_metric import OVLVISMetric
from .mean_iou import mean_iou
from .region_metric import RegionClassificationMetric

__all__ = ['RegionClassificationMetric', 'OVLVISMetric', 'D2IoUMetric', 'd2_segmentation_metrics', 'mean_iou']
