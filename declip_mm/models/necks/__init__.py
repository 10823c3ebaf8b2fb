"""Necks for dense-prediction heads on a ViT."""
from .simple_pyramid import SimplePyramid

__all__ = ['SimplePyramid']
