"""Overlays for people: a photo with its segmentation (a colour per class, a legend) or its detections (boxes, class
and score), one palette for both, class names in any script (``fonts.py``), and the red note band that marks the
results of random weights.

    segmentation_overlay(image, labels, class_names, background_index=None, note=None)     # SegmentationResult.overlay
    detection_overlay(image, boxes, scores, labels, class_names, note=None)                # DetectionResult.overlay
"""
from typing import List, Optional, Sequence

import numpy as np

from .fonts import draw_text

PALETTE_SEED = 3
LEGEND_ROW = 18                  # pixels per legend line (a 14-pixel colour swatch, then the name)
NOTE_BAND = 18                   # pixels of the note band on top


def class_palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours, one per class index, the same in every overlay (seeded; each channel in 40..254)."""
    return np.random.default_rng(PALETTE_SEED).integers(40, 255, size=(num_classes, 3)).astype(np.uint8)


def draw_note(canvas, note: str):
    """``canvas`` (PIL) with ``note`` in white on a red band added above it (e.g. that the weights are random)."""
    from PIL import Image
    out = Image.new('RGB', (canvas.width, canvas.height + NOTE_BAND), (200, 0, 0))
    out.paste(canvas, (0, NOTE_BAND))
    draw_text(out, (4, 3), note, fill=(255, 255, 255))
    return out


def segmentation_overlay(image: np.ndarray, labels: np.ndarray, class_names: List[str], alpha: float = 0.5,
                         background_index: Optional[int] = None, note: Optional[str] = None):
    """A PIL image: the photo (H, W, 3) blended with a colour per class of ``labels`` (H, W), with a legend of the
    classes present under it. The class ``background_index`` is drawn black (None: class 0 when it is named
    'background', the benchmarks' rule); ``note``, when given, is drawn on a red band on top (:func:`draw_note`)."""
    from PIL import Image, ImageDraw
    palette = class_palette(len(class_names))
    if background_index is None and class_names and class_names[0].split(';')[0].strip() == 'background':
        background_index = 0
    if background_index is not None:
        palette[background_index] = (0, 0, 0)
    blend = (image * (1 - alpha) + palette[labels] * alpha).astype(np.uint8)
    present = [c for c in np.unique(labels)]
    legend_h = LEGEND_ROW * len(present) + 6
    canvas = Image.new('RGB', (image.shape[1], image.shape[0] + legend_h), (255, 255, 255))
    canvas.paste(Image.fromarray(blend), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(present):
        y = image.shape[0] + 4 + LEGEND_ROW * i
        draw.rectangle([4, y, 18, y + 14], fill=tuple(int(v) for v in palette[c]))
        draw_text(canvas, (24, y), class_names[c].split(';')[0].strip(), fill=(0, 0, 0))
    return canvas if note is None else draw_note(canvas, note)


overlay = segmentation_overlay          # the name tools/demo.py and the proof-of-mechanism project use


def detection_overlay(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      class_names: Sequence[str], line_width: int = 2, note: Optional[str] = None):
    """A PIL image: the photo (H, W, 3) with each box (N, 4) xyxy outlined in its class colour, its class name and
    score above it; ``note`` on a red band on top (:func:`draw_note`)."""
    from PIL import Image, ImageDraw
    palette = [tuple(int(v) for v in c) for c in class_palette(len(class_names))]
    canvas = Image.fromarray(np.array(image))
    draw = ImageDraw.Draw(canvas)
    for box, score, label in zip(boxes, scores, labels):
        colour = palette[int(label)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line_width)
        draw_text(canvas, (x1 + 2, max(0.0, y1 - 12)), f'{class_names[int(label)]} {score:.2f}', fill=colour)
    return canvas if note is None else draw_note(canvas, note)
