"""Metrics mmdet/mmseg lack (or that need a fix to run with the locked stack)."""
from .lvis_metric import OVLVISMetric
from .region_metric import RegionClassificationMetric

__all__ = ['RegionClassificationMetric', 'OVLVISMetric']
