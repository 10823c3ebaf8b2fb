from . import presets  # noqa: F401
from .backbones import DeCLIPViT
from .clip_factory import create_clip, resolve_pretrained
from .distillers import DeCLIPDistiller, DistillDataPreprocessor
from .losses import ContentDistillLoss, ContextDistillLoss, RegionCorrelationLoss
from .teachers import DiffusionTeacher, VFMTeacher
from .text import ClassEmbeddings, CLIPTextEncoder

__all__ = ['DeCLIPViT', 'CLIPTextEncoder', 'ClassEmbeddings', 'create_clip', 'resolve_pretrained', 'DeCLIPDistiller',
           'DistillDataPreprocessor', 'ContextDistillLoss', 'ContentDistillLoss', 'RegionCorrelationLoss',
           'VFMTeacher', 'DiffusionTeacher']
