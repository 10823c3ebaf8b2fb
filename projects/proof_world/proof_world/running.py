"""Running the ablation: distil each variant through mmengine's Runner (cached by the resolved config and the
content of every input), evaluate every backbone on held-out scenes (training-free mIoU, region top-1), and
collect the rows (``run_ablation`` -> ``AblationResult``). The variants are ``variants.py``; the table, plots and
overlays ``reporting.py``."""
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .variants import CONFIG_DIR, REPO, VARIANT_BY_KEY, VARIANTS, ProofInputs, Variant, distill_config

CACHE_VERSION = 1          # bump when the meaning of a cached backbone or evaluation changes


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


def _config_identity(cfg) -> dict:
    d = cfg.to_dict()
    for key in ('work_dir', 'experiment_name', 'custom_hooks_progress', 'log_level'):
        d.pop(key, None)
    d['custom_hooks'] = [h for h in d.get('custom_hooks', []) if h.get('type') != 'ProgressBarHook']
    return d


def distill_key(cfg, inputs: ProofInputs) -> str:
    """Cache key: the resolved config and the content of the CLIP weights, the VFM weights ('random': random or
    label-made teachers, named by the config), the diffusion UNet's folder and the world."""
    vfm_ckpt = inputs.vfm_teacher.get('checkpoint')
    sd = cfg.model.get('diffusion_teacher')
    return _sha(dict(version=CACHE_VERSION, config=_config_identity(cfg), clip=_file_digest(inputs.clip_checkpoint),
                     vfm=_file_digest(vfm_ckpt) if vfm_ckpt else 'random', world=world_digest(inputs.world_root),
                     **({'sd': _file_digest(sd['folder'])} if sd else {})))[:20]


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
    # the resolved config is written next to the run: the command that reproduces it whatever the options replaced
    command = f'python tools/train.py {work_dir / "config.py"}  # {(CONFIG_DIR / variant.config).relative_to(REPO)} ' \
              + 'with ' + ' '.join(f'{k}={v}' for k, v in _flatten_options(options).items())
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
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(work_dir / 'config.py'))
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


def _flatten_options(options: dict) -> dict:
    """Dotted ``--cfg-options`` keys for display, dict values (a replaced teacher config) flattened."""
    out = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out.update(_flatten_options({f'{key}.{k}': v for k, v in value.items() if k != '_delete_'}))
        else:
            out[key] = value
    return out


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
             max_images: Optional[int] = None, keep: Sequence[int] = (), progress: Optional[str] = None,
             first_image: int = 0) -> dict:
    """mIoU (all classes) and region classification (thing boxes) of one backbone on the scenes
    ``first_image`` .. ``first_image + max_images - 1`` of a split (``keep`` indexes that range).

    Returns dict(mIoU, per_class_IoU, region_top1 (mean per-class top-1, things), region_top5, num_regions,
    predictions={index: (H, W) labels} for the indices in ``keep``)."""
    import torch
    from PIL import Image

    from declip_mm.apis import mean_iou, segment_image
    from declip_mm.evaluation.region_metric import RegionClassificationMetric
    segmentor, classifier = build_models(inputs, backbone, mode)
    records = read_annotations(inputs.world_root, split)[first_image:]
    records = records[:max_images] if max_images else records
    if not records:
        raise ValueError(f'no {split} scenes from index {first_image} in {inputs.world_root}')
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
                 log: Callable[[str], None] = print, first_image: int = 0) -> AblationResult:
    """Distil every distilled variant once per seed (cached), evaluate every variant on ``split`` (scenes
    ``first_image`` .. ``first_image + max_images - 1``).

    Training-free variants have no randomness and are evaluated once."""
    result = AblationResult(inputs, list(seeds))
    clip_id = _file_digest(inputs.clip_checkpoint)
    eval_settings = dict(version=CACHE_VERSION, split=split, max_images=max_images, world=world_digest(inputs.world_root),
                         classes=inputs.class_names, things=inputs.thing_classes, templates=inputs.templates if isinstance(inputs.templates, str) else list(inputs.templates),
                         clip=clip_id, **({'first_image': first_image} if first_image else {}))
    for key in variants:
        variant = VARIANT_BY_KEY[key]
        if not variant.distilled:
            row = _eval_cached(cache_root, dict(eval_settings, backbone=None, mode=variant.eval_mode),
                               lambda: evaluate(inputs, None, variant.eval_mode, split, max_images,
                                                progress=f'eval {key}' if progress else None,
                                                first_image=first_image))
            result.rows[key] = [row]
            log(f'  {variant.name:30s} mIoU {row["mIoU"]:5.1f}  region top-1 {row["region_top1"]:5.1f}')
            continue
        result.rows[key], result.runs[key] = [], []
        for seed in seeds:
            run = distill(variant, inputs, seed, cache_root, overrides, progress)
            row = _eval_cached(cache_root, dict(eval_settings, backbone=_file_digest(run.backbone),
                                                mode=variant.eval_mode),
                               lambda: evaluate(inputs, run.backbone, variant.eval_mode, split, max_images,
                                                progress=f'eval {key} s{seed}' if progress else None,
                                                first_image=first_image))
            row = dict(row, seed=seed, seconds=run.seconds, cached=run.cached)
            result.rows[key].append(row)
            result.runs[key].append(run)
            log(f'  {variant.name:30s} {inputs.teacher:8s} seed {seed}  mIoU {row["mIoU"]:5.1f}  region top-1 {row["region_top1"]:5.1f}'
                + ('  (cached)' if run.cached else f'  ({run.seconds:.0f} s)'))
    return result


def run_teacher_ablation(inputs: ProofInputs, teachers: Sequence, cache_root: Path, seeds: Sequence[int] = (0, 1, 2),
                         variants: Sequence[str] = tuple(v.key for v in VARIANTS), overrides: Optional[dict] = None,
                         teacher_overrides: Optional[Dict[str, dict]] = None, **kwargs) -> Dict[str, AblationResult]:
    """``run_ablation`` per context teacher (``teachers.PreparedTeacher``): the variants that read the teacher run
    with each teacher; the others (training-free, content-only) once, under the key '-'. ``overrides``: the
    ``--cfg-options`` of every run; ``teacher_overrides``: per teacher key, those chosen for it (e.g. its
    context-loss weight), for the variants that read it. -> {'-' or teacher key: result}."""
    from .teachers import teacher_inputs
    if not teachers:
        raise ValueError('run_teacher_ablation needs at least one teacher')
    results = {}
    free = [k for k in variants if not VARIANT_BY_KEY[k].uses_teacher]
    if free:
        results['-'] = run_ablation(teacher_inputs(inputs, teachers[0]), cache_root, seeds, free, overrides, **kwargs)
    used = [k for k in variants if VARIANT_BY_KEY[k].uses_teacher]
    for teacher in teachers if used else ():
        options = dict(overrides or {}, **(teacher_overrides or {}).get(teacher.key, {}))
        results[teacher.key] = run_ablation(teacher_inputs(inputs, teacher), cache_root, seeds, used, options,
                                            **kwargs)
    return results
