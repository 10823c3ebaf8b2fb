"""Proof of mechanism (issue 11): a procedural world with known ground truth, a tiny CLIP pretrained on its
captions and a label-free self-supervised context teacher, all trained on this machine in minutes."""
from .world import CLASS_NAMES, IGNORE, STUFF_CLASSES, THING_CLASSES, render_scene, write_world

__all__ = ['CLASS_NAMES', 'IGNORE', 'STUFF_CLASSES', 'THING_CLASSES', 'render_scene', 'write_world']
