"""The proof's context teachers, one key each, all loaded by the distiller as its ``vfm_teacher``:

=========  ===================================================================  ===========  ===============
key        what                                                                 uses labels  made by
=========  ===================================================================  ===========  ===============
infonce    label-free dense InfoNCE across two crops (the first world teacher)  no           vfm_pretrain.py
dino       label-free DINO / iBOT self-distillation (EMA teacher, multi-crop,   no           dino_pretrain.py
           masked patches; lightly's losses and heads)
sam        SAM-like: trained on the train scenes' class-agnostic masks          masks only   sam_pretrain.py
random     the same ViT with random weights (a control)                         no           -
oracle     the ground-truth segments themselves (an upper bound)                yes          oracle_teacher.py
=========  ===================================================================  ===========  ===============

``prepare_teacher(key, world_root)`` returns what ``ProofInputs`` needs (the distiller's ``vfm_teacher`` config,
the dataset options the teacher needs), training and caching the tower on first use; ``teacher_probe`` measures
any of them with the same grouping probes (``probes.patch_knn_accuracy``) at the distillation's geometry.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .world import CLASS_NAMES, IGNORE


@dataclass(frozen=True)
class TeacherSpec:
    key: str
    name: str
    uses_labels: str          # 'no', 'masks only' (class-agnostic segments), 'yes'
    description: str = ''


TEACHERS = {t.key: t for t in (
    TeacherSpec('infonce', 'label-free InfoNCE', 'no', 'dense InfoNCE between two crops (vfm_pretrain.py)'),
    TeacherSpec('dino', 'DINO-like', 'no', 'DINO + iBOT self-distillation with lightly (dino_pretrain.py)'),
    TeacherSpec('sam', 'SAM-like', 'masks only', 'trained on class-agnostic masks (sam_pretrain.py)'),
    TeacherSpec('random', 'random weights', 'no', 'the teacher ViT with random weights'),
    TeacherSpec('oracle', 'oracle (labels)', 'yes', 'ground-truth segment histograms (oracle_teacher.py)'),
)}


@dataclass
class PreparedTeacher:
    """A teacher ready for ``ProofInputs``: its config, the dataset options it needs, its weights' report."""
    key: str
    vfm_teacher: Dict
    dataset: Dict = field(default_factory=dict)
    report: Optional[Dict] = None


def oracle_teacher_cfg() -> Dict:
    from .vfm_pretrain import VFM_MODEL_KWARGS
    return dict(type='OracleSegmentTeacher', num_classes=len(CLASS_NAMES), patch_size=VFM_MODEL_KWARGS['patch_size'],
                ignore_index=IGNORE)


def prepare_teacher(key: str, world_root, cache_dir: Optional[str] = None, progress: bool = True,
                    checkpoint: Optional[str] = None) -> PreparedTeacher:
    """The teacher ``key`` of ``TEACHERS`` for the world at ``world_root`` (pretrained and cached on first use;
    ``checkpoint``: weights pretrained before, for the trained teachers)."""
    from .cache import read_report
    from .vfm_pretrain import VFM_ARCH, VFM_MODEL_KWARGS, vfm_teacher_cfg
    if key not in TEACHERS:
        raise ValueError(f"unknown context teacher '{key}'; choose one of {sorted(TEACHERS)}")
    if key == 'oracle':
        return PreparedTeacher(key, oracle_teacher_cfg(), dict(label_dir='train/labels', ignore_index=IGNORE))
    if key == 'random':
        return PreparedTeacher(key, dict(type='VFMTeacher', arch=VFM_ARCH, checkpoint=None, dtype='fp32',
                                         model_kwargs=dict(VFM_MODEL_KWARGS)))
    if checkpoint is not None:
        return PreparedTeacher(key, vfm_teacher_cfg(checkpoint), report=_report_or_none(checkpoint))
    if key == 'infonce':
        from .vfm_pretrain import pretrain_vfm as pretrain
    elif key == 'dino':
        from .dino_pretrain import pretrain_dino as pretrain
    else:
        from .sam_pretrain import pretrain_sam as pretrain
    path, cfg = pretrain(world_root, cache_dir=cache_dir, progress=progress)
    return PreparedTeacher(key, dict(cfg), report=read_report(path))


def _report_or_none(path) -> Optional[Dict]:
    from .cache import read_report
    try:
        return read_report(path)
    except FileNotFoundError:
        return None


@torch.no_grad()
def teacher_probe(vfm_teacher: Dict, world_root, val_offset: int = 0, val_scenes: int = 100,
                  train_scenes: int = 200, seed: int = 0) -> Dict:
    """``probes.patch_knn_accuracy`` of a teacher config at the distillation's geometry (the whole 128 px scene,
    a 16 x 16 token grid for 8 px patches): within-image neighbour precision, segment-affinity AUC, k-NN accuracy
    on held-out scenes ``val_offset`` ...; the oracle reads the label maps."""
    from declip_mm.constants import IMAGENET_MEAN_255, IMAGENET_STD_255
    from declip_mm.registry import MODELS

    from .probes import patch_knn_accuracy
    from .world import read_world_params
    torch.manual_seed(seed)           # a random-weight teacher is the same every time
    teacher = MODELS.build(dict(vfm_teacher)).eval()
    size = read_world_params(world_root)['size']
    grid = size // teacher.patch_size
    if getattr(teacher, 'input_view', 'vfm') == 'vfm_labels':
        return patch_knn_accuracy(lambda labels: teacher(labels.long()), world_root, grid, train_scenes, val_scenes,
                                  val_offset=val_offset, from_labels=True)
    mean = torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_255).view(1, 3, 1, 1)
    side = grid * teacher.patch_size

    def features_of(images):
        x = images.float()
        if x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode='bilinear', antialias=True, align_corners=False)
        return teacher((x - mean) / std)
    return patch_knn_accuracy(features_of, world_root, grid, train_scenes, val_scenes, val_offset=val_offset)


def teacher_inputs(inputs, teacher: PreparedTeacher):
    """``inputs`` (ProofInputs) with its context teacher replaced by ``teacher``."""
    import dataclasses
    return dataclasses.replace(inputs, vfm_teacher=dict(teacher.vfm_teacher), teacher=teacher.key,
                               teacher_dataset=dict(teacher.dataset))


__all__ = ['PreparedTeacher', 'TEACHERS', 'TeacherSpec', 'oracle_teacher_cfg', 'prepare_teacher', 'teacher_inputs',
           'teacher_probe']
