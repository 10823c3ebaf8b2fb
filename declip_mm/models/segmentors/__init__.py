"""Segmentors: training-free open-vocabulary segmentation; CAT-Seg (cost aggregation, CVPR'24)."""
from .catseg import CATSeg, catseg_loss
from .catseg_aggregator import CATSegAggregator
from .training_free import TrainingFreeSegmentor, load_class_names

__all__ = ['TrainingFreeSegmentor', 'load_class_names', 'CATSeg', 'CATSegAggregator', 'catseg_loss']
