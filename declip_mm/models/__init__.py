from . import presets  # noqa: F401
from .backbones import DeCLIPViT
from .clip_factory import create_clip, resolve_pretrained

__all__ = ['DeCLIPViT', 'create_clip', 'resolve_pretrained']
