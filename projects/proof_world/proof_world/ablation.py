"""The proof-of-mechanism ablation (docs/proof.md): distil the world's tiny CLIP with each DeCLIP
variant through the real configs and Runner, and measure its dense features on held-out scenes.

Variants (``VARIANTS``), all from the same pretrained CLIP, same seeds, same held-out scenes:

=======================  ==========================================================  ================
variant                  what                                                         evaluated in
=======================  ==========================================================  ================
vanilla CLIP             the unmodified last block's patch tokens, no training       ``vanilla``
MaskCLIP                 value path of the last block (MaskCLIP), no training        ``maskclip``
training-free csa        q-q + k-k attention in the last block (SCLIP-like)          ``csa``
content only             content loss only (CLIPSelf-like), csa student              ``csa``
joint, no decoupling     content + context loss on the SAME dense features           ``csa``
context only             context loss on q / k only                                  ``csa``
DeCLIP                   content on the dense map + context on q / k                 ``csa``
DeCLIP + RCC             DeCLIP + region correlation constraint                      ``csa``
DeCLIP + SD-GSC          DeCLIP, the teacher's affinity completed by the world UNet  ``csa``
DeCLIP + SD-GSC + RCC    both                                                        ``csa``
=======================  ==========================================================  ================

Every variant that reads a context teacher runs with each teacher of ``teachers.TEACHERS`` asked for
(``running.run_teacher_ablation``); the others once.

Every distilled variant trains the same decoupled ``csa`` student and is evaluated the way the authors run
DeCLIP checkpoints for training-free segmentation: in the mode it was distilled in (``csa``), attention scale
1/sqrt(d), the weight-space ensemble (alpha 0.7) exported by ``DeCLIPDistillHook``.

Metrics, on the world's held-out split: training-free segmentation mIoU over all the world's classes (stuff +
things; ``TrainingFreeSegmentor`` + ``declip_mm.apis.mean_iou``, mmseg IoUMetric's definition) and region
classification (each object box pooled from the dense map with ``RegionClassifier``'s pooling (RoIAlign
1x1), classified against the text embeddings of all classes; ``RegionClassificationMetric``'s mean per-class
top-1 over the thing classes).

Distilled backbones and their evaluations are cached under ``cache_root``, keyed by the resolved config and the
content of every input (CLIP and VFM weights, the world's annotations): a second run trains nothing.

The pieces: ``variants.py`` (the rows, their inputs and configs), ``running.py`` (distilling, evaluating, caching,
``run_ablation``) and ``reporting.py`` (table, plots, overlays). This module gathers their public names.
"""
from .reporting import (checks, format_checks, format_table, plot_losses, plot_miou, result_json, summary,
                        write_overlays, write_report)
from .running import (CACHE_VERSION, AblationResult, DistillRun, build_models, distill, distill_key, evaluate,
                      read_annotations, read_losses, record_boxes, run_ablation, run_teacher_ablation, world_digest)
from .teachers import TEACHERS, PreparedTeacher, prepare_teacher, teacher_inputs, teacher_probe
from .variants import CONFIG_DIR, REPO, VARIANT_BY_KEY, VARIANTS, ProofInputs, Variant, distill_config, prepare_inputs

__all__ = ['AblationResult', 'CACHE_VERSION', 'PreparedTeacher', 'TEACHERS', 'checks', 'format_checks',
           'prepare_teacher', 'run_teacher_ablation', 'teacher_inputs', 'teacher_probe', 'CONFIG_DIR', 'DistillRun', 'ProofInputs', 'REPO', 'VARIANTS',
           'VARIANT_BY_KEY', 'Variant', 'build_models', 'distill', 'distill_config', 'distill_key', 'evaluate',
           'format_table', 'plot_losses', 'plot_miou', 'prepare_inputs', 'read_annotations', 'read_losses',
           'record_boxes', 'result_json', 'run_ablation', 'summary', 'world_digest', 'write_overlays', 'write_report']
