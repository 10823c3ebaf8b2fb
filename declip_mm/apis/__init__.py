"""One-call APIs for users."""
from .open_vocab import build_segmentor, mean_iou, overlay, segment_image

__all__ = ['build_segmentor', 'segment_image', 'mean_iou', 'overlay']
