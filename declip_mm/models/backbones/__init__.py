from .declip_vit import MODES, DeCLIPFeatures, DeCLIPViT

__all__ = ['DeCLIPViT', 'DeCLIPFeatures', 'MODES']
