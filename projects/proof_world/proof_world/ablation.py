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
=======================  ==========================================================  ================

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
"""
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CACHE_VERSION = 1          # bump when the meaning of a cached backbone or evaluation changes


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a distillation config (None = training-free) and the mode it is evaluated in."""
    name: str
    key: str
    eval_mode: str
    config: Optional[str] = None
    description: str = ''

    @property
    def distilled(self) -> bool:
        return self.config is not None


VARIANTS = (
    Variant('vanilla CLIP', 'vanilla', 'vanilla', None, 'unmodified last block, no training'),
    Variant('MaskCLIP', 'maskclip', 'maskclip', None, 'value path of the last block, no training'),
    Variant('training-free csa', 'csa', 'csa', None, 'q-q + k-k attention in the last block, no training'),
    Variant('content only (CLIPSelf-like)', 'content_only', 'csa', 'content-only_world-clip_proof-world.py',
            'content loss only'),
    Variant('joint, no decoupling', 'joint', 'csa', 'joint-no-decoupling_world-clip_world-vfm_proof-world.py',
            'content + context on the same dense features'),
    Variant('context only', 'context_only', 'csa', 'context-only_world-clip_world-vfm_proof-world.py',
            'context loss on q / k only'),
    Variant('DeCLIP', 'declip', 'csa', 'declip_world-clip_world-vfm_proof-world.py',
            'content on the dense map + context on q / k'),
    Variant('DeCLIP + RCC', 'declip_rcc', 'csa', 'declip-rcc_world-clip_world-vfm_proof-world.py',
            'DeCLIP + region correlation constraint'),
)
VARIANT_BY_KEY = {v.key: v for v in VARIANTS}


@dataclass
class ProofInputs:
    """What the ablation needs from the world and the pretraining (projects/proof_world/proof_world/world.py, pretrain.py).

    world_root: the folder ``write_world`` wrote ({train,val}/{images,labels}, annotations.json).
    model_name: the open_clip model name of the world's CLIP; clip_checkpoint: its open_clip-format weights.
    vfm_teacher: the VFMTeacher config ``pretrain_vfm`` returns.
    class_names / thing_classes: the world's vocabulary (all classes; the object classes among them).
    templates: the prompt templates the text tower embeds class names with ('imagenet80': the segmentation
        protocol's 80 ImageNet prompts, as the world CLIP's zero-shot probe).
    image_size: the side the student is distilled and evaluated at.
    """
    world_root: Path
    model_name: str
    clip_checkpoint: str
    vfm_teacher: dict
    class_names: List[str]
    thing_classes: List[str]
    templates: Union[str, Sequence[str]] = 'imagenet80'
    image_size: int = 224
    ignore_index: int = 255

    def __post_init__(self):
        self.world_root = Path(self.world_root)
        for name in self.thing_classes:
            if name not in self.class_names:
                raise ValueError(f"thing class '{name}' is not among the class names {self.class_names}")


def prepare_inputs(world_root=None, n_train: int = 2000, n_val: int = 200, size: int = 128, world_seed: int = 0,
                   cache_dir: Optional[str] = None, clip_kwargs: Optional[dict] = None,
                   vfm_kwargs: Optional[dict] = None, progress: bool = True, clip_checkpoint: Optional[str] = None,
                   vfm_checkpoint: Optional[str] = None) -> ProofInputs:
    """Write the world (idempotent) and pretrain its CLIP and VFM (cached by ``projects.proof_world.proof_world.pretrain``);
    ``clip_checkpoint`` / ``vfm_checkpoint`` use weights pretrained before instead (default architectures)."""
    from .cache import default_world_root
    from .pretrain import CLIP_MODEL, pretrain_clip, pretrain_vfm
    from .world import CLASS_NAMES, IGNORE, THING_CLASSES, write_world
    root = Path(world_root) if world_root else default_world_root(n_train, n_val, size, world_seed, cache_dir)
    write_world(root, n_train, n_val, size, world_seed)
    clip_kwargs = dict(clip_kwargs or {})
    for path in (clip_checkpoint, vfm_checkpoint):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f'pretrained weights not found: {path}')
    clip = clip_checkpoint or pretrain_clip(root, cache_dir=cache_dir, progress=progress, **clip_kwargs)
    if vfm_checkpoint:
        from .vfm_pretrain import vfm_teacher_cfg
        vfm_cfg = vfm_teacher_cfg(vfm_checkpoint)
    else:
        _, vfm_cfg = pretrain_vfm(root, cache_dir=cache_dir, progress=progress, **(vfm_kwargs or {}))
    return ProofInputs(world_root=root, model_name=clip_kwargs.get('model_name', CLIP_MODEL), clip_checkpoint=str(clip),
                       vfm_teacher=dict(vfm_cfg), class_names=list(CLASS_NAMES), thing_classes=list(THING_CLASSES),
                       image_size=size, ignore_index=IGNORE)


# ---------------------------------------------------------------------------------------------- helpers
def _file_digest(path) -> str:
    from declip_mm.models.distillers.teacher_cache import weights_digest
    return weights_digest(path)


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def world_digest(world_root: Path) -> str:
    """sha256 of the world's stamp and annotations (the world is a pure function of its parameters)."""
    root = Path(world_root)
    files = [root / 'world.json'] + [root / split / 'annotations.json' for split in ('train', 'val')]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f'{f} not found: write the world first (projects.proof_world.proof_world.world.write_world)')
    return _sha([_file_digest(f) for f in files])


def read_annotations(world_root: Path, split: str) -> List[dict]:
    """The split's records from ``<root>/<split>/annotations.json`` (``write_world``'s format), each with
    absolute 'image' and 'label' paths added."""
    folder = Path(world_root) / split
    ann = folder / 'annotations.json'
    if not ann.is_file():
        raise FileNotFoundError(f'{ann} not found: write the world first (projects.proof_world.proof_world.world.write_world)')
    records = json.loads(ann.read_text()).get('images')
    if not records:
        raise KeyError(f"{ann} has no 'images' records")
    return [dict(r, image=str(folder / r['file_name']), label=str(folder / r['label_file'])) for r in records]


def record_boxes(record: dict):
    """(boxes (n, 4) xyxy float32 pixels, labels (n,) int64 ids into CLASS_NAMES) of a record's things."""
    return (np.asarray(record['boxes'], np.float32).reshape(-1, 4),
            np.asarray(record['box_labels'], np.int64).reshape(-1))


# ---------------------------------------------------------------------------------------------- distillation
@dataclass
class DistillRun:
    """A distilled backbone: its checkpoint, the per-iteration losses, whether it came from the cache."""
    variant: str
    seed: int
    backbone: str
    losses: Dict[str, List[float]]
    cached: bool
    seconds: float
    command: str = ''


def distill_config(variant: Variant, inputs: ProofInputs, seed: int, overrides: Optional[dict] = None):
    """The variant's mmengine Config with the world's inputs and the seed filled in (plus ``overrides``,
    dotted keys as ``--cfg-options`` takes them)."""
    from mmengine.config import Config

    from declip_mm.models.teachers.vfm import VFMTeacher
    cfg = Config.fromfile(str(CONFIG_DIR / variant.config))
    vision = _vision_cfg(inputs.model_name)
    options = {
        'model.student.model_name': inputs.model_name,
        'model.student.pretrained': str(inputs.clip_checkpoint),
        'model.student.input_size': inputs.image_size,
        'train_dataloader.dataset.data_root': str(inputs.world_root),
        'train_dataloader.dataset.img_dir': 'train/images',
        'train_dataloader.dataset.student_size': inputs.image_size,
        'train_dataloader.dataset.student_patch': vision['patch_size'],
        'train_dataloader.dataset.crop_size': vision['image_size'],      # crops at the CLIP's own resolution
        'train_dataloader.dataset.seed': seed,
        'randomness.seed': seed,
    }
    options.update(_flatten('model.vfm_teacher', inputs.vfm_teacher))
    options.update(overrides or {})
    cfg.merge_from_dict(options)
    teacher = VFMTeacher(**{k: v for k, v in inputs.vfm_teacher.items() if k != 'type'})
    cfg.train_dataloader.dataset.vfm_patch = int(teacher.patch_size)
    # the cosine must end with the run, whatever max_iters an override set
    for sched in cfg.param_scheduler:
        if sched.get('type') == 'WarmupCosineLR':
            sched.end = cfg.train_cfg.max_iters
    return cfg, options


def _flatten(prefix: str, value) -> dict:
    """A nested dict as the dotted keys of ``--cfg-options``."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flatten(f'{prefix}.{key}', item).items()}


def _vision_cfg(model_name: str) -> dict:
    import open_clip

    from declip_mm.models import presets  # noqa: F401  (registers the package's open_clip model configs)
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown open_clip model '{model_name}'")
    return config['vision_cfg']


def _config_identity(cfg) -> dict:
    d = cfg.to_dict()
    for key in ('work_dir', 'experiment_name', 'custom_hooks_progress', 'log_level'):
        d.pop(key, None)
    d['custom_hooks'] = [h for h in d.get('custom_hooks', []) if h.get('type') != 'ProgressBarHook']
    return d


def distill_key(cfg, inputs: ProofInputs) -> str:
    """Cache key: the resolved config and the content of the CLIP weights, the VFM weights and the world."""
    vfm_ckpt = inputs.vfm_teacher.get('checkpoint')
    return _sha(dict(version=CACHE_VERSION, config=_config_identity(cfg), clip=_file_digest(inputs.clip_checkpoint),
                     vfm=_file_digest(vfm_ckpt) if vfm_ckpt else 'random', world=world_digest(inputs.world_root)))[:20]


def read_losses(work_dir: Path) -> Dict[str, List[float]]:
    """Per-iteration loss terms from the Runner's scalars.json (LoggerHook interval 1, window 1)."""
    rows = [json.loads(line) for f in sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
            for line in f.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in rows for k in r if k.startswith('loss')})
    return {k: [float(r[k]) for r in rows if k in r] for k in keys}


def distill(variant: Variant, inputs: ProofInputs, seed: int, cache_root: Path, overrides: Optional[dict] = None,
            progress: bool = True) -> DistillRun:
    """Distil ``variant`` with ``seed`` through mmengine's Runner (``declip_mm.engine.runner_setup.build_runner``,
    what tools/train.py runs), or return the cached result of the same config and inputs."""
    if not variant.distilled:
        raise ValueError(f"variant '{variant.key}' is training-free; nothing to distil")
    cfg, options = distill_config(variant, inputs, seed, overrides)
    key = distill_key(cfg, inputs)
    work_dir = Path(cache_root) / 'distill' / f'{variant.key}-seed{seed}-{key}'
    backbone = work_dir / 'declip_backbone_final.pth'
    losses_file = work_dir / 'losses.json'
    command = ('python tools/train.py ' + str((CONFIG_DIR / variant.config).relative_to(REPO)) + ' --cfg-options '
               + ' '.join(f'{k}={v}' for k, v in options.items()))
    if backbone.is_file() and losses_file.is_file():
        return DistillRun(variant.key, seed, str(backbone), json.loads(losses_file.read_text()), True, 0.0, command)

    from declip_mm.engine.runner_setup import build_runner
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{variant.key}-seed{seed}-{time.time_ns()}'    # unique logger / visualizer names
    cfg.launcher = 'none'
    cfg.log_level = 'WARNING'
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    if progress:
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='ProgressBarHook', desc=f'{variant.key} s{seed}')]
    start = time.time()
    runner = build_runner(cfg)
    runner.train()
    seconds = time.time() - start
    losses = read_losses(work_dir)
    losses_file.write_text(json.dumps(losses))
    (work_dir / 'run.json').write_text(json.dumps(dict(variant=variant.key, seed=seed, seconds=seconds,
                                                       command=command), indent=1))
    _close_runner(runner)
    return DistillRun(variant.key, seed, str(backbone), losses, False, seconds, command)


def _close_runner(runner) -> None:
    """Release the run's log file handlers (many runs share one process)."""
    for handler in list(runner.logger.handlers):
        if hasattr(handler, 'baseFilename'):
            handler.close()
            runner.logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------------- evaluation
def build_models(inputs: ProofInputs, backbone: Optional[str], mode: str):
    """(TrainingFreeSegmentor, RegionClassifier) on the same weights: the world CLIP (``backbone`` None) or a
    distilled DeCLIPViT checkpoint, dense features in ``mode``."""
    from declip_mm.apis import build_segmentor
    from declip_mm.registry import MODELS
    weights = backbone or str(inputs.clip_checkpoint)
    # a DeCLIPViT checkpoint restores its own mode; the segmentor / classifier choose the mode they read
    backbone_cfg = dict(type='DeCLIPViT', model_name=inputs.model_name, pretrained=weights, trainable='none',
                        attn_scale='1/sqrt(d)', mode=None if backbone else mode)
    text_cfg = dict(type='OpenCLIPTextEncoder', model_name=inputs.model_name, pretrained=str(inputs.clip_checkpoint),
                    templates=inputs.templates if isinstance(inputs.templates, str) else list(inputs.templates))
    segmentor = build_segmentor(backbone=backbone_cfg, text_encoder=text_cfg, class_names=inputs.class_names,
                                logit_scale=40.0, bg_thresh=0.0, mode=mode, test_cfg=dict(mode='whole'))
    classifier = MODELS.build(dict(type='RegionClassifier', backbone=backbone_cfg, text_encoder=text_cfg,
                                   class_names=inputs.class_names, pooling='box', topk=5, mode=mode)).eval()
    return segmentor, classifier


def evaluate(inputs: ProofInputs, backbone: Optional[str], mode: str, split: str = 'val',
             max_images: Optional[int] = None, keep: Sequence[int] = (), progress: Optional[str] = None) -> dict:
    """mIoU (all classes) and region classification (thing boxes) of one backbone on a split.

    Returns dict(mIoU, per_class_IoU, region_top1 (mean per-class top-1, things), region_top5, num_regions,
    predictions={index: (H, W) labels} for the indices in ``keep``)."""
    import torch
    from PIL import Image

    from declip_mm.apis import mean_iou, segment_image
    from declip_mm.evaluation.region_metric import RegionClassificationMetric
    segmentor, classifier = build_models(inputs, backbone, mode)
    records = read_annotations(inputs.world_root, split)[:max_images]
    thing_ids = {inputs.class_names.index(c) for c in inputs.thing_classes}
    metric = RegionClassificationMetric(topk=(1, 5))
    preds, gts, kept = [], [], {}
    iterator = records
    if progress:
        from tqdm import tqdm
        iterator = tqdm(records, desc=progress, unit='img', leave=False)
    with torch.no_grad():
        for i, record in enumerate(iterator):
            image = np.asarray(Image.open(record['image']).convert('RGB'))
            gt = np.asarray(Image.open(record['label'])).astype(np.int64)
            labels, _ = segment_image(segmentor, image, short_side=min(image.shape[:2]))
            preds.append(labels)
            gts.append(gt)
            if i in keep:
                kept[i] = labels
            boxes, box_labels = record_boxes(record)
            if len(boxes):
                sample = _RegionSample(torch.from_numpy(boxes))
                data = segmentor.data_preprocessor(dict(inputs=[torch.from_numpy(
                    np.ascontiguousarray(image.transpose(2, 0, 1)))], data_samples=None), False)
                classifier(data['inputs'], [sample])
                metric.process(None, [dict(pred_topk=sample.pred_topk, gt_labels=torch.from_numpy(box_labels),
                                           is_thing=torch.tensor([int(b) in thing_ids for b in box_labels]))])
    ious = mean_iou(preds, gts, num_classes=len(inputs.class_names), ignore_index=inputs.ignore_index)
    regions = metric.compute_metrics(metric.results) if metric.results else {}
    return dict(mIoU=ious['mIoU'], per_class_IoU=ious['per_class'], region_top1=regions.get('thing_top1', math.nan),
                region_top5=regions.get('thing_top5', math.nan), num_regions=regions.get('num_regions', 0),
                num_images=len(records), predictions=kept)


class _RegionSample:
    """The attributes RegionClassifier reads (gt_bboxes) and writes (pred_scores, pred_topk)."""

    def __init__(self, gt_bboxes):
        self.gt_bboxes = gt_bboxes


# ---------------------------------------------------------------------------------------------- the ablation
@dataclass
class AblationResult:
    inputs: ProofInputs
    seeds: List[int]
    rows: Dict[str, List[dict]] = field(default_factory=dict)       # variant key -> one evaluation per seed
    runs: Dict[str, List[DistillRun]] = field(default_factory=dict)  # variant key -> its distillation runs

    def mean_std(self, key: str, metric: str):
        values = np.array([r[metric] for r in self.rows[key]], dtype=float)
        return float(np.nanmean(values)), float(np.nanstd(values)) if len(values) > 1 else 0.0


def _eval_cached(cache_root: Path, ident: dict, compute: Callable[[], dict]) -> dict:
    path = Path(cache_root) / 'eval' / f'{_sha(ident)[:20]}.json'
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    result = {k: v for k, v in result.items() if k != 'predictions'}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def run_ablation(inputs: ProofInputs, cache_root: Path, seeds: Sequence[int] = (0, 1, 2),
                 variants: Sequence[str] = tuple(v.key for v in VARIANTS), overrides: Optional[dict] = None,
                 split: str = 'val', max_images: Optional[int] = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> AblationResult:
    """Distil every distilled variant once per seed (cached), evaluate every variant on ``split``.

    Training-free variants have no randomness and are evaluated once."""
    result = AblationResult(inputs, list(seeds))
    clip_id = _file_digest(inputs.clip_checkpoint)
    eval_settings = dict(version=CACHE_VERSION, split=split, max_images=max_images, world=world_digest(inputs.world_root),
                         classes=inputs.class_names, things=inputs.thing_classes, templates=inputs.templates if isinstance(inputs.templates, str) else list(inputs.templates),
                         clip=clip_id)
    for key in variants:
        variant = VARIANT_BY_KEY[key]
        if not variant.distilled:
            row = _eval_cached(cache_root, dict(eval_settings, backbone=None, mode=variant.eval_mode),
                               lambda: evaluate(inputs, None, variant.eval_mode, split, max_images,
                                                progress=f'eval {key}' if progress else None))
            result.rows[key] = [row]
            log(f'  {variant.name:30s} mIoU {row["mIoU"]:5.1f}  region top-1 {row["region_top1"]:5.1f}')
            continue
        result.rows[key], result.runs[key] = [], []
        for seed in seeds:
            run = distill(variant, inputs, seed, cache_root, overrides, progress)
            row = _eval_cached(cache_root, dict(eval_settings, backbone=_file_digest(run.backbone),
                                                mode=variant.eval_mode),
                               lambda: evaluate(inputs, run.backbone, variant.eval_mode, split, max_images,
                                                progress=f'eval {key} s{seed}' if progress else None))
            row = dict(row, seed=seed, seconds=run.seconds, cached=run.cached)
            result.rows[key].append(row)
            result.runs[key].append(run)
            log(f'  {variant.name:30s} seed {seed}  mIoU {row["mIoU"]:5.1f}  region top-1 {row["region_top1"]:5.1f}'
                + ('  (cached)' if run.cached else f'  ({run.seconds:.0f} s)'))
    return result


def format_table(result: AblationResult) -> str:
    """Markdown table: mean ± std over seeds (training-free rows: one deterministic evaluation)."""
    lines = ['| variant | evaluated in | seeds | mIoU | region top-1 (things) | region top-5 (things) |',
             '|---|---|---|---|---|---|']
    for key, rows in result.rows.items():
        v = VARIANT_BY_KEY[key]

        def cell(metric):
            mean, std = result.mean_std(key, metric)
            return f'{mean:.1f}' if len(rows) == 1 else f'{mean:.1f} ± {std:.1f}'
        seeds = '-' if not v.distilled else str(len(rows))
        lines.append(f'| {v.name} | `{v.eval_mode}` | {seeds} | {cell("mIoU")} | {cell("region_top1")} | '
                     f'{cell("region_top5")} |')
    return '\n'.join(lines)


def summary(result: AblationResult) -> dict:
    """The issue's target, checked: DeCLIP vs the best training-free baseline and vs content-only (mIoU)."""
    free = [k for k in result.rows if not VARIANT_BY_KEY[k].distilled]
    best_free = max(free, key=lambda k: result.mean_std(k, 'mIoU')[0]) if free else None
    out = {}
    if 'declip' in result.rows:
        declip = result.mean_std('declip', 'mIoU')[0]
        if best_free:
            out['best_training_free'] = best_free
            out['declip_minus_best_training_free'] = declip - result.mean_std(best_free, 'mIoU')[0]
        if 'content_only' in result.rows:
            out['declip_minus_content_only'] = declip - result.mean_std('content_only', 'mIoU')[0]
        out['target_met'] = bool(out.get('declip_minus_best_training_free', -1) >= 5
                                 and out.get('declip_minus_content_only', -1) > 0)
    return out


def result_json(result: AblationResult) -> dict:
    return dict(seeds=result.seeds, model_name=result.inputs.model_name, world_root=str(result.inputs.world_root),
                class_names=result.inputs.class_names,
                variants={k: dict(name=VARIANT_BY_KEY[k].name, eval_mode=VARIANT_BY_KEY[k].eval_mode,
                                  config=VARIANT_BY_KEY[k].config, rows=rows,
                                  mIoU=result.mean_std(k, 'mIoU'), region_top1=result.mean_std(k, 'region_top1'),
                                  commands=[r.command for r in result.runs.get(k, [])])
                          for k, rows in result.rows.items()},
                summary=summary(result))


# ---------------------------------------------------------------------------------------------- pictures
def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plot_losses(result: AblationResult, path: Path) -> Optional[Path]:
    """One panel per loss term, one line per distilled variant (first seed). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    terms = sorted({t for runs in result.runs.values() for t in runs[0].losses if t != 'loss'}) + ['loss']
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for key, runs in result.runs.items():
            values = runs[0].losses.get(term)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, label=VARIANT_BY_KEY[key].name, lw=1.2)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel('iteration', fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=6, loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_miou(result: AblationResult, path: Path) -> Optional[Path]:
    """Bar chart of mIoU per variant (mean ± std over seeds, seeds as dots). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    keys = list(result.rows)
    means = [result.mean_std(k, 'mIoU')[0] for k in keys]
    stds = [result.mean_std(k, 'mIoU')[1] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 3))
    colours = ['#9e9e9e' if not VARIANT_BY_KEY[k].distilled else '#1f77b4' for k in keys]
    colours = ['#d62728' if k.startswith('declip') else c for k, c in zip(keys, colours)]
    ax.bar(range(len(keys)), means, yerr=stds, color=colours, capsize=3)
    for i, k in enumerate(keys):
        ax.scatter([i] * len(result.rows[k]), [r['mIoU'] for r in result.rows[k]], s=8, color='k', zorder=3)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([VARIANT_BY_KEY[k].name for k in keys], rotation=25, ha='right', fontsize=7)
    ax.set_ylabel('mIoU (held-out scenes)', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def write_overlays(inputs: ProofInputs, panels: Dict[str, Optional[str]], modes: Dict[str, str], out_dir: Path,
                   indices: Sequence[int], split: str = 'val') -> List[Path]:
    """Side-by-side pictures per held-out scene: one panel per entry of ``panels`` (title -> backbone checkpoint,
    None = the world CLIP, read in ``modes[title]``), then the label."""
    from PIL import Image, ImageDraw

    from declip_mm.apis import overlay
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_annotations(inputs.world_root, split)
    predictions = {title: evaluate(inputs, ckpt, modes[title], split, max_images=max(indices) + 1,
                                   keep=indices)['predictions'] for title, ckpt in panels.items()}
    shown = list(inputs.class_names)
    paths = []
    for i in indices:
        image = np.asarray(Image.open(records[i]['image']).convert('RGB'))
        gt = np.asarray(Image.open(records[i]['label'])).astype(np.int64)
        pictures = [(t, overlay(image, predictions[t][i], shown)) for t in panels]
        pictures.append(('label', overlay(image, np.where(gt == inputs.ignore_index, 0, gt), shown)))
        width = sum(p.width for _, p in pictures) + 8 * (len(pictures) - 1)
        height = max(p.height for _, p in pictures) + 16
        canvas = Image.new('RGB', (width, height), 'white')
        draw = ImageDraw.Draw(canvas)
        x = 0
        for title, picture in pictures:
            draw.text((x + 2, 2), title, fill=(0, 0, 0))
            canvas.paste(picture, (x, 16))
            x += picture.width + 8
        path = out_dir / f'{split}_{i:05d}.png'
        canvas.save(path)
        paths.append(path)
    return paths


def write_report(result: AblationResult, out_dir: Path, overlay_scenes: int = 6, split: str = 'val',
                 log: Callable[[str], None] = print) -> dict:
    """results.json, table.md, losses.png, miou.png and overlays/ (vanilla CLIP | DeCLIP | label) in ``out_dir``.
    Returns the paths written (plots are None without matplotlib)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(result)
    (out_dir / 'table.md').write_text(table + '\n')
    (out_dir / 'results.json').write_text(json.dumps(result_json(result), indent=1))
    paths = dict(table=out_dir / 'table.md', results=out_dir / 'results.json')
    paths['losses_plot'] = plot_losses(result, out_dir / 'losses.png') if result.runs else None
    paths['miou_plot'] = plot_miou(result, out_dir / 'miou.png')
    if paths['miou_plot'] is None:
        log('  matplotlib is not installed: no plots (the table and results.json hold the numbers)')
    paths['overlays'] = []
    if overlay_scenes and 'declip' in result.runs:
        panels = {'vanilla CLIP': None, 'DeCLIP (seed %d)' % result.runs['declip'][0].seed:
                  result.runs['declip'][0].backbone}
        modes = {'vanilla CLIP': 'vanilla', 'DeCLIP (seed %d)' % result.runs['declip'][0].seed: 'csa'}
        paths['overlays'] = write_overlays(result.inputs, panels, modes, out_dir / 'overlays',
                                           list(range(overlay_scenes)), split)
    return paths
