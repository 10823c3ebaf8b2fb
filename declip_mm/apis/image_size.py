"""The size rules for users' images (docs/inference.md, "Image sizes").

Segmentation (network input, then the sliding windows tile it):

1. the benchmark rule, mmseg ``Resize(scale=(max_long_side, short_side), keep_ratio=True)``: scale
   ``s = min(short_side / short, max_long_side / long)`` (448 / 4096), sides ``int(side * s + 0.5)``; an image
   smaller than one window is scaled up to it;
2. a very elongated image (aspect ratio above max_long_side / min_short_side, 18:1 by default) would come out
   with a short side under ``min_short_side`` (224): it is scaled so that its short side is ``min_short_side``
   instead, and the windows tile its long side (more windows, not a thinner strip);
3. an aspect ratio above ``max_aspect`` (64:1) is refused (:class:`ImageSizeError`).

Outputs (labels, probabilities, the overlay) have the image's own size up to ``max_output_pixels`` (4 MP by
default) and up to ``MAX_OUTPUT_VALUES`` / (number of text queries) pixels (the (S, H, W) query maps at the
output size stay under 1 GiB: about 1.3 MP for ADE-150's queries); a larger image's outputs are scaled down to
that many pixels, keeping the aspect ratio. ``max_output_pixels=0`` turns both caps off.
"""
import math
from typing import Tuple

from .inputs import InputError

MAX_ASPECT = 64.0
MAX_OUTPUT_PIXELS = 4_000_000
MAX_OUTPUT_VALUES = 2 ** 28          # float32 values of one (S, H, W) map at the output size: 1 GiB


class ImageSizeError(InputError):
    """An image whose size the model cannot use (e.g. 1 x 10000 pixels)."""


def check_aspect(h: int, w: int, max_aspect: float = MAX_ASPECT, what: str = 'image') -> None:
    if h < 1 or w < 1:
        raise ImageSizeError(f'{what} is empty ({h} x {w} pixels)')
    if max(h, w) / min(h, w) > max_aspect:
        raise ImageSizeError(f'{what} is {h} x {w} pixels, an aspect ratio of {max(h, w) / min(h, w):.0f}:1, '
                             f'above the {max_aspect:.0f}:1 this model handles; crop it into pieces first')


def rescaled(h: int, w: int, scale: float) -> Tuple[int, int]:
    """mmcv's ``rescale_size``: ``int(side * scale + 0.5)``, at least 1 pixel."""
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def segmentation_input_size(h: int, w: int, short_side: int = 448, max_long_side: int = 4096,
                            min_short_side: int = 224, max_aspect: float = MAX_ASPECT) -> Tuple[int, int]:
    """(h, w) of an image -> (h', w') of the network input (module doc, rules 1-3)."""
    check_aspect(h, w, max_aspect)
    short, long = min(h, w), max(h, w)
    scale = min(short_side / short, max_long_side / long)
    if short * scale < min_short_side:
        scale = min_short_side / short
    return rescaled(h, w, scale)


def output_size(h: int, w: int, max_pixels: int = MAX_OUTPUT_PIXELS, channels: int = 1) -> Tuple[int, int]:
    """(h, w) of an image -> the size of its outputs: the same, or scaled down to ``max_pixels`` and to
    ``MAX_OUTPUT_VALUES / channels`` pixels (``max_pixels`` 0 = no cap at all)."""
    if max_pixels:
        max_pixels = min(max_pixels, MAX_OUTPUT_VALUES // max(1, channels))
    if not max_pixels or h * w <= max_pixels:
        return h, w
    scale = math.sqrt(max_pixels / (h * w))
    return max(1, int(h * scale)), max(1, int(w * scale))
