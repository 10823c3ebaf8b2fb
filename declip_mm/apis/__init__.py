"""One-call APIs for users: segmentation, detection and dense features of users' images (docs/inference.md).

    segmenter.py       OpenVocabSegmenter, SegmentationResult; build_segmentor, segment_image (the one pipeline)
    detector.py        OpenVocabDetector, DetectionResult
    features.py        DenseFeatureExtractor, DenseFeatures
    attention.py       AttentionExplorer, AttentionMaps, pixel_to_token: the attention and affinity explorer
    inputs.py          reading users' images and videos, and streaming them (iter_inputs)
    vocabulary.py      users' vocabularies; image_size.py, precision.py: the size and precision rules
    visualization.py   both overlays and their palette (fonts.py: class names in any script)
    outputs.py         the output folder of a command; runs.py: the ``declip-mm`` commands' work
    web_app.py         the local web page (``declip-mm serve``)

The names below are imported when first used (PEP 562), so that the command line can read its light modules
(inputs, vocabulary, outputs, runs) without importing torch.
"""
import importlib

_EXPORTS = {
    'OpenVocabSegmenter': 'segmenter', 'SegmentationResult': 'segmenter', 'build_segmentor': 'segmenter',
    'segment_image': 'segmenter', 'OpenVocabDetector': 'detector', 'DetectionResult': 'detector',
    'DenseFeatureExtractor': 'features', 'DenseFeatures': 'features', 'load_image': 'inputs', 'InputError': 'inputs',
    'parse_vocabulary': 'vocabulary', 'Vocabulary': 'vocabulary', 'VocabularyError': 'vocabulary',
    'resolve_precision': 'precision', 'overlay': 'visualization', 'segmentation_overlay': 'visualization',
    'detection_overlay': 'visualization', 'mean_iou': '..evaluation.mean_iou',
    'AttentionExplorer': 'attention', 'AttentionMaps': 'attention', 'pixel_to_token': 'attention',
}
_HEAVY = {'segmenter', 'detector', 'features', 'precision', 'attention'}

__all__ = ['build_segmentor', 'segment_image', 'mean_iou', 'overlay', 'OpenVocabSegmenter', 'SegmentationResult',
           'OpenVocabDetector', 'DetectionResult', 'DenseFeatureExtractor', 'DenseFeatures', 'parse_vocabulary',
           'Vocabulary', 'VocabularyError', 'load_image', 'InputError', 'resolve_precision', 'segmentation_overlay',
           'detection_overlay', 'AttentionExplorer', 'AttentionMaps', 'pixel_to_token']


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module in _HEAVY:       # a model API: every module registered first, as `import declip_mm` does (the
        import declip_mm       # command line imports the package without them until it builds a model)
        declip_mm.register_all_modules()
    value = getattr(importlib.import_module(module if module.startswith('..') else f'.{module}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
