"""Open-vocabulary region classification."""
from .region_classifier import RegionClassifier

__all__ = ['RegionClassifier']
