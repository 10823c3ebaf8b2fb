"""One-call APIs for users: segmentation, detection and dense features of users' images (docs/inference.md)."""
from .detector import DetectionResult, OpenVocabDetector
from .features import DenseFeatureExtractor, DenseFeatures
from .inputs import InputError, load_image
from .open_vocab import build_segmentor, mean_iou, overlay, segment_image
from .precision import resolve_precision
from .segmenter import OpenVocabSegmenter, SegmentationResult
from .vocabulary import Vocabulary, VocabularyError, parse_vocabulary

__all__ = ['build_segmentor', 'segment_image', 'mean_iou', 'overlay', 'OpenVocabSegmenter', 'SegmentationResult',
           'OpenVocabDetector', 'DetectionResult', 'DenseFeatureExtractor', 'DenseFeatures', 'parse_vocabulary',
           'Vocabulary', 'VocabularyError', 'load_image', 'InputError', 'resolve_precision']
