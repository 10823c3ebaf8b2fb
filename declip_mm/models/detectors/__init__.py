"""Open-vocabulary detectors: F-ViT and its heads (DOWNSTREAM.md Part 1)."""
from .fvit import FViT
from .fvit_heads import FeatureMaps, FViTBBoxHead, FViTRoIHead, TextEmbeddingClassifier
from .rpn_head import NormRPNHead

__all__ = ['FViT', 'FViTBBoxHead', 'FViTRoIHead', 'TextEmbeddingClassifier', 'FeatureMaps', 'NormRPNHead']
