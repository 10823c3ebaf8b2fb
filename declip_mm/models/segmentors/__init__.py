"""Segmentors: training-free open-vocabulary segmentation (CAT-Seg with a later issue)."""
from .training_free import TrainingFreeSegmentor, load_class_names

__all__ = ['TrainingFreeSegmentor', 'load_class_names']
