"""Open-vocabulary detectors: F-ViT and its heads (CLIPSelf's F-ViT on mmdet 3.x; docs/detection.md)."""
from .fvit import FViT
from .fvit_heads import FeatureMaps, FViTBBoxHead, FViTRoIHead, TextEmbeddingClassifier
from .rpn_head import NormRPNHead

__all__ = ['FViT', 'FViTBBoxHead', 'FViTRoIHead', 'TextEmbeddingClassifier', 'FeatureMaps', 'NormRPNHead']
