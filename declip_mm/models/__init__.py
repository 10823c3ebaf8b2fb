from . import presets  # noqa: F401
from .backbones import DeCLIPViT
from .classifiers import RegionClassifier
from . import detectors, necks  # noqa: F401  (registered: F-ViT, SimplePyramid)
from .clip_factory import create_clip, resolve_pretrained
from .distillers import DeCLIPDistiller, DistillDataPreprocessor
from .losses import ContentDistillLoss, ContextDistillLoss, RegionCorrelationLoss
from .teachers import DiffusionTeacher, VFMTeacher
from .segmentors import TrainingFreeSegmentor
from .text import ClassEmbeddings, OpenCLIPTextEncoder

__all__ = ['DeCLIPViT', 'OpenCLIPTextEncoder', 'ClassEmbeddings', 'create_clip', 'resolve_pretrained', 'DeCLIPDistiller',
           'DistillDataPreprocessor', 'ContextDistillLoss', 'ContentDistillLoss', 'RegionCorrelationLoss',
           'VFMTeacher', 'DiffusionTeacher', 'TrainingFreeSegmentor', 'RegionClassifier']
