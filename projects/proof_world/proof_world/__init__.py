"""The proof-of-mechanism project: a procedural world with known ground truth, a tiny CLIP pretrained on its captions
and a label-free self-supervised context teacher, all trained on this machine in minutes, then every DeCLIP ablation
distilled through ``declip_mm`` and mmengine's Runner. Not part of the library: its configs register it with
``custom_imports=['declip_mm', 'projects.proof_world.proof_world']`` (projects/proof_world/README.md).

Importing it registers ``ProofWorldDataset``, ``OracleSegmentTeacher`` and its open_clip model configs (``model_configs/``:
``DeCLIP-Proof-ViT-8``, ``DeCLIP-Proof-Test-ViT-8``)."""
from pathlib import Path

import open_clip

from .dataset import ProofWorldDataset
from .oracle_teacher import OracleSegmentTeacher
from .world import CLASS_NAMES, IGNORE, STUFF_CLASSES, THING_CLASSES, render_scene, write_world

MODEL_CONFIG_DIR = Path(__file__).parent / 'model_configs'
if str(MODEL_CONFIG_DIR) not in {str(p) for p in open_clip.factory._MODEL_CONFIG_PATHS}:
    open_clip.add_model_config(MODEL_CONFIG_DIR)

__all__ = ['CLASS_NAMES', 'IGNORE', 'OracleSegmentTeacher', 'ProofWorldDataset', 'STUFF_CLASSES', 'THING_CLASSES', 'render_scene',
           'write_world']
