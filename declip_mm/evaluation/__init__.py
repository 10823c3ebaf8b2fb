"""Metrics mmdet/mmseg lack."""
from .region_metric import RegionClassificationMetric

__all__ = ['RegionClassificationMetric']
