"""Metrics mmdet/mmseg lack (or that need a fix to run with the locked stack)."""
from .d2_iou_metric import D2IoUMetric, d2_segmentation_metrics
from .lvis_metric import OVLVISMetric
from .region_metric import RegionClassificationMetric

__all__ = ['RegionClassificationMetric', 'OVLVISMetric', 'D2IoUMetric', 'd2_segmentation_metrics']
