"""The work of the ``declip-mm`` commands (``segment``, ``detect``, ``features``, ``attention``, ``export``) on the
options ``cli.py`` parsed.

A run goes one way:

1. every check that needs no model, each a :class:`SetupError` (exit 2): the vocabulary (``vocabulary.py``), flags
   that go together, the inputs (``inputs.collect_inputs``), numbers in range, weights files, random towers (only
   with ``--random-weights``), the output folder and the names it would write (``outputs.py``);
2. the model, built once (the first model API used registers every module: ``declip_mm/__init__.py``);
3. the inputs streamed one at a time (``inputs.iter_inputs``: images and sampled video frames; unreadable files
   come as :class:`~.inputs.Skipped`), each result written as soon as it is computed (``outputs.OutputFolder``;
   overlays from ``visualization.py``), skips counted and listed;
4. the summary, one closing line, and the exit status: 0 all done, 1 some inputs skipped (or none processed).

This module, ``inputs``, ``vocabulary`` and ``outputs`` import nothing heavy: the command's usage errors come
before torch is imported. It is longer than most modules on purpose: the four command bodies (segment, detect,
features, attention) share the checks and the loop above and read best side by side.
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from ..constants import TINY_MODELS
from .inputs import (InputError, Skipped, collect_inputs, count_items, is_video, iter_inputs, load_segment_ids,
                     unique_name, video_frames)
from .outputs import OutputError, OutputFolder
from .random_weights import RANDOM_NOTE
from .vocabulary import parse_vocabulary

MODES = ('csa', 'qq', 'kk', 'vanilla', 'maskclip')          # DeCLIPViT's MODES (checked there too, after building)
WEIGHTS_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')


class SetupError(Exception):
    """A problem with the command line or the model set-up: reported as ``declip-mm: error: ...`` (exit 2)."""


# ---------------------------------------------------------------------- messages
def progress(total, quiet, desc):
    from tqdm import tqdm
    return tqdm(total=total, disable=quiet, desc=desc, unit='img', dynamic_ncols=True)


def report(msg: str, bar=None) -> None:
    if bar is not None and not bar.disable:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def announce(args, random: bool) -> None:
    if random:
        report(f'declip-mm {args.command}: {RANDOM_NOTE} (--random-weights)')


# ---------------------------------------------------------------------- checks before any model
def collect(args) -> List[Path]:
    """The input files of the command line (checked before any model is built)."""
    if not args.fps > 0:
        raise SetupError(f'--fps must be positive, got {args.fps}')
    try:
        return collect_inputs(args.inputs)
    except InputError as err:
        raise SetupError(str(err)) from err


def check_ranges(args) -> None:
    """Numbers and names a command would otherwise accept silently or fail on late."""
    rules = (('short_side', lambda v: v > 0, 'a positive number of pixels'),
             ('long_side', lambda v: v > 0, 'a positive number of pixels'),
             ('window', lambda v: v >= 0, '0 (whole image) or a positive number of pixels'),
             ('stride', lambda v: v > 0, 'a positive number of pixels'),
             ('max_output_pixels', lambda v: v >= 0, '0 (never scale down) or a positive number'),
             ('bg_thresh', lambda v: 0 <= v <= 1, 'a probability between 0 and 1'),
             ('score_thr', lambda v: 0 <= v <= 1, 'a score between 0 and 1'),
             ('logit_scale', lambda v: v > 0, 'a positive number'),
             ('batch_size', lambda v: v > 0, 'a positive number'))
    for name, ok, what in rules:
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise SetupError(f"--{name.replace('_', '-')} must be {what}, got {value}")
    if getattr(args, 'window', None) and getattr(args, 'stride', None) and args.stride > args.window:
        raise SetupError(f'--stride {args.stride} is larger than --window {args.window}: pixels between windows '
                         'would get no prediction')
    mode = getattr(args, 'mode', None)
    if mode is not None and mode not in MODES:
        raise SetupError(f"--mode must be one of {', '.join(MODES)}, got '{mode}'")


def random_towers(args, text: bool = True) -> List[str]:
    """The flags whose weights are missing (so those towers would be random), for a model built without --config."""
    if getattr(args, 'config', None) is not None and args.command != 'detect':
        return []
    if args.command == 'detect':
        flags = (('--checkpoint', args.checkpoint), ('--text-weights', args.text_weights))
    else:
        flags = (('--backbone', args.backbone),) + ((('--text-weights', args.text_weights),) if text else ())
    return [flag for flag, value in flags if value is None]


def check_setup(args, text: bool = True) -> bool:
    """Everything about the command line that needs no model: ranges, flags that go together, weights files
    (readable checkpoints), random towers (only with --random-weights). Returns whether towers are random."""
    check_ranges(args)
    if args.trust_checkpoint:
        from ..utils.checkpoint_io import TRUST_ENV
        os.environ[TRUST_ENV] = '1'
    if args.command != 'detect' and args.config is None and args.checkpoint is not None:
        raise SetupError('--checkpoint goes with --config; for a backbone file use --backbone')
    if args.command != 'detect' and args.config is not None and args.random_weights:
        raise SetupError('--random-weights goes without --config (a config names its own weights)')
    if args.command == 'detect' and not Path(args.config).is_file():
        raise SetupError(f'config file not found: {args.config}')
    for flag in ('backbone', 'checkpoint', 'text_weights'):
        value = getattr(args, flag, None)
        if value is not None and (Path(value).suffix in WEIGHTS_SUFFIXES or Path(value).exists()):
            from ..utils.checkpoint_io import check_checkpoint_file
            try:
                check_checkpoint_file(value)
            except (FileNotFoundError, ValueError) as err:
                raise SetupError(f"--{flag.replace('_', '-')}: {err}") from None
    missing = random_towers(args, text)
    if missing and not args.random_weights:
        what = 'the tiny test preset has no weights' if getattr(args, 'model_name', None) in TINY_MODELS else \
            'weights are never downloaded'
        raise SetupError(f"no {' or '.join(missing)} given, so the model would run with random weights and "
                         f"meaningless results ({what}): pass {' and '.join(missing)}, or --random-weights to try "
                         'the pipeline anyway')
    return bool(missing)


def check_onnx_setup(args) -> bool:
    """``--backend onnxruntime``: the export folder is the ``--backbone`` and nothing else sets the towers (checked
    before any model). Returns whether the export was made from random towers (then only with --random-weights)."""
    check_ranges(args)
    if args.config is not None:
        raise SetupError('--backend onnxruntime runs an export folder given as --backbone; drop --config')
    if getattr(args, 'text_weights', None) is not None:
        raise SetupError("--text-weights: the onnxruntime backend runs the export folder's own text tower; drop it")
    if args.backbone is None:
        raise SetupError('--backend onnxruntime needs --backbone EXPORT_DIR (declip-mm export --onnx EXPORT_DIR '
                         'writes one)')
    from ..deploy.onnx_runtime import OnnxExportError, read_manifest
    try:
        manifest = read_manifest(args.backbone)
    except OnnxExportError as err:
        raise SetupError(f'--backbone: {err}') from None
    from .backends import check_backend, check_export
    try:
        check_backend('onnxruntime', args.device or 'cpu', args.precision)
        check_export(manifest, args.backbone, args.model_name, args.mode)
    except ValueError as err:
        raise SetupError(str(err)) from None
    if args.command == 'segment' and manifest['text_encoder'] is None:
        raise SetupError(f'{args.backbone} is an image-only export (no text tower): export it with --text-weights '
                         'to segment with it')
    if manifest.get('random_weights') and not args.random_weights:
        raise SetupError(f'{args.backbone} was exported from towers without weights (random: meaningless results); '
                         'pass --random-weights to run it anyway')
    return bool(manifest.get('random_weights'))


def open_outputs(args, files: List[Path], settings: dict, outputs_of: Callable[[str], List[str]]):
    """The checked output folder; drops earlier outputs from ``files`` and refuses (before any model is built)
    to replace files this tool did not write there. Returns (folder, files)."""
    try:
        folder = OutputFolder(Path(args.out), args.command, settings, overwrite=args.overwrite)
        own = folder.own_files()
        kept = [p for p in files if p.resolve() not in own]
        if not kept:
            raise OutputError(f'every input is an output of an earlier declip-mm run in {args.out}')
        taken: set = set()
        folder.claim([name for p in kept if not is_video(p) for name in outputs_of(unique_name(p.stem, taken))])
    except OutputError as err:
        raise SetupError(str(err)) from None
    return folder, kept


# ---------------------------------------------------------------------- the model
def build(factory, *args, **kwargs):
    """``factory(*args, **kwargs)``; a missing weights file, a file that is not a checkpoint, a bad config key or
    value becomes a SetupError (one line, exit 2)."""
    try:
        return factory(*args, **kwargs)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        raise SetupError(text.splitlines()[0] if text else type(err).__name__) from None


def device_of(args) -> str:
    import torch
    return args.device or ('cuda' if torch.cuda.is_available() else 'cpu')


# ---------------------------------------------------------------------- the inputs
def run_items(args, files: List[Path], writer, desc: str, handle) -> int:
    """Feeds every input to ``handle(item) -> summary entry``; skips what cannot be read. Returns the exit code."""
    import torch
    if args.skip_existing:
        done = [p for p in files if writer.finished(str(p))]
        files = [p for p in files if p not in done]
        if done:
            report(f'declip-mm {args.command}: {len(done)} input(s) already done in {writer.out} (--skip-existing)')
    bar = progress(count_items(files, args.fps), args.quiet, desc)
    with bar:
        for item in iter_inputs(files, args.fps, set()):
            if isinstance(item, Skipped):
                report(f'declip-mm: skipped {item.source}: {item.reason}', bar)
                writer.skip(item.source, item.reason)
                bar.update(1)
                continue
            try:
                entry = handle(item)
            except (InputError, OutputError, MemoryError, torch.cuda.OutOfMemoryError) as err:
                source = item.source if item.frame is None else f'{item.source} frame {item.frame}'
                skipped = Skipped.of(source, err if isinstance(err, (InputError, OutputError)) else
                                     RuntimeError(f'{type(err).__name__}: {err}'))
                report(f'declip-mm: skipped {skipped.source}: {skipped.reason}', bar)
                writer.skip(skipped.source, skipped.reason)
            else:
                entry = dict(name=item.name, source=item.source, **({} if item.frame is None else
                                                                     dict(frame=item.frame, time=item.time)), **entry)
                writer.done(entry)
            bar.update(1)
    return finish(args, writer)


def finish(args, writer) -> int:
    """Writes the final summary and the closing line; exit 0 when this run processed everything it was given."""
    writer.flush()
    note = f' ({RANDOM_NOTE})' if writer.summary['settings'].get('random_weights') else ''
    print(f"declip-mm {args.command}: {writer.processed_now} processed, {writer.skipped_now} skipped; "
          f"results in {writer.out}{note}", file=sys.stderr, flush=True)
    return 0 if writer.skipped_now == 0 and (writer.processed_now > 0 or args.skip_existing) else 1


# ---------------------------------------------------------------------- the commands
def segment(args) -> int:
    """``declip-mm segment``: per input an overlay PNG, a label PNG and per-class scores (JSON)."""
    vocab = parse_vocabulary(args.vocab, args.background)
    if args.bg_thresh is not None and args.background is None:
        raise SetupError('--bg-thresh goes with --background NAME (without a background there is no threshold)')
    if args.config is not None:
        given = [flag for flag in ('backbone', 'text_weights', 'logit_scale', 'window', 'stride', 'short_side', 'mode')
                 if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the model and its protocol; drop --{', --'.join(given).replace('_', '-')}")
    files = collect(args)
    random = check_onnx_setup(args) if args.backend == 'onnxruntime' else check_setup(args)
    writer, files = open_outputs(args, files, dict(vocabulary=vocab.classes, class_names=vocab.names,
                                                   background=vocab.background, random_weights=random),
                                 lambda name: [f'{name}_overlay.png', f'{name}_labels.png', f'{name}.json'])
    from . import OpenVocabSegmenter
    device = build(device_of, args)
    if args.config is not None:
        seg = build(OpenVocabSegmenter.from_config, args.config, args.checkpoint, device=device,
                    precision=args.precision, bg_thresh=args.bg_thresh, max_output_pixels=args.max_output_pixels)
    else:                            # options left unset are None: the segmenter's protocol defaults apply
        seg = build(OpenVocabSegmenter, args.model_name, backbone=args.backbone, text_weights=args.text_weights,
                    device=device, precision=args.precision, mode=args.mode, logit_scale=args.logit_scale,
                    bg_thresh=args.bg_thresh, window=args.window, stride=args.stride, short_side=args.short_side,
                    max_output_pixels=args.max_output_pixels, backend=args.backend)
    seg.set_vocabulary(vocab)
    writer.summary['settings'].update(device=str(seg.device), precision=seg.precision, backend=seg.backend,
                                      bg_thresh=seg.bg_thresh if vocab.background else None)
    announce(args, random)

    def handle(item):
        res = seg(item.image)
        files = dict(overlay=writer.image(f'{item.name}_overlay.png', res.overlay(note=RANDOM_NOTE if random else None)),
                     labels=writer.image(f'{item.name}_labels.png', res.label_image()))
        files['scores'] = writer.json(f'{item.name}.json', dict(source=item.source, random_weights=random,
                                                                **res.summary()))
        top = sorted(res.areas().items(), key=lambda kv: -kv[1])[:3]
        return dict(files=files, top_classes={k: round(v, 4) for k, v in top})
    return run_items(args, files, writer, 'segmenting', handle)


def detect(args) -> int:
    """``declip-mm detect``: per input an overlay PNG and the boxes (JSON)."""
    vocab = parse_vocabulary(args.vocab)
    files = collect(args)
    random = check_setup(args)
    writer, files = open_outputs(args, files, dict(vocabulary=vocab.classes, class_names=vocab.names,
                                                   score_thr=args.score_thr, random_weights=random),
                                 lambda name: [f'{name}_overlay.png', f'{name}.json'])
    from . import OpenVocabDetector
    det = build(OpenVocabDetector, args.config, args.checkpoint, text_weights=args.text_weights,
                backbone='' if args.random_weights and args.checkpoint is None else None,
                device=device_of(args), precision=args.precision, score_thr=args.score_thr)
    det.set_vocabulary(vocab)
    writer.summary['settings'].update(device=str(det.device), precision=det.precision)
    announce(args, random)

    def handle(item):
        res = det(item.image)
        files = dict(overlay=writer.image(f'{item.name}_overlay.png', res.overlay(note=RANDOM_NOTE if random else None)),
                     detections=writer.json(f'{item.name}.json', dict(source=item.source, random_weights=random,
                                                                      **res.summary())))
        return dict(files=files, detections=len(res))
    return run_items(args, files, writer, 'detecting', handle)


def _read_boxes(path: Optional[str]) -> Optional[dict]:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SetupError(f'--boxes {path}: cannot read the JSON ({err})') from None
    if not isinstance(data, dict):
        raise SetupError(f'--boxes {path}: expected {{"image file name": [[x1, y1, x2, y2], ...]}}')
    return data


def features(args) -> int:
    """``declip-mm features``: per image the dense map (and region / mask embeddings), per video one (T, D, h, w)."""
    if args.config is not None:
        given = [flag for flag in ('backbone', 'mode') if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the backbone; drop --{', --'.join(given)}")
    files = collect(args)
    random = check_onnx_setup(args) if args.backend == 'onnxruntime' else check_setup(args, text=False)
    boxes = _read_boxes(args.boxes)
    if args.masks is not None and not Path(args.masks).is_dir():
        raise SetupError(f'--masks {args.masks}: not a folder')
    fmt = args.format
    writer, files = open_outputs(args, files, dict(normalized=not args.raw, format=fmt, random_weights=random),
                                 lambda name: [f'{name}.{fmt}', f'{name}.json', f'{name}_boxes.{fmt}',
                                               f'{name}_masks.{fmt}'])
    import torch

    from . import DenseFeatureExtractor
    device = device_of(args)
    if args.config is not None:
        fx = build(DenseFeatureExtractor.from_config, args.config, args.checkpoint, device=device,
                   precision=args.precision, long_side=args.long_side, batch_size=args.batch_size)
    else:
        fx = build(DenseFeatureExtractor, args.model_name, backbone=args.backbone, device=device,
                   precision=args.precision, mode=args.mode, long_side=args.long_side, batch_size=args.batch_size,
                   backend=args.backend)
    writer.summary['settings'].update(model=fx.backbone.model_name, mode=fx.backbone.mode, long_side=fx.long_side,
                                      device=str(fx.device), precision=fx.precision, backend=fx.backend)
    announce(args, random)

    def store(name, tensor):
        tensor = tensor if args.raw else torch.nn.functional.normalize(tensor, dim=-3)
        return writer.array(name, tensor.half() if args.half else tensor, fmt)

    def handle(item):
        f = fx(item.image)
        entry = dict(files=dict(features=store(item.name, f.map)), **f.meta())
        source = Path(item.source)
        if boxes is not None and item.frame is None:
            given = boxes.get(source.name, boxes.get(str(source)))
            if given is not None:
                try:
                    emb = fx.regions(f, given)
                except ValueError as err:
                    raise InputError(f'--boxes for {source.name}: {err}') from err
                entry['files']['boxes'] = writer.array(f'{item.name}_boxes', emb, fmt)
                entry['boxes'] = len(emb)
        if args.masks is not None and item.frame is None:
            mask_file = Path(args.masks) / f'{source.stem}.png'
            if mask_file.is_file():
                ids = load_segment_ids(mask_file, f.image_shape)
                values = [int(v) for v in np.unique(ids) if v != 0]
                emb = fx.masks(f, np.stack([ids == v for v in values]) if values else
                               np.zeros((0, *f.image_shape), bool))
                entry['files']['masks'] = writer.array(f'{item.name}_masks', emb, fmt)
                entry['mask_ids'] = values
        writer.json(f'{item.name}.json', dict(source=item.source, random_weights=random,
                                              **{k: v for k, v in entry.items() if k != 'files'}))
        return entry

    # videos: all sampled frames of a video in one (T, D, h, w) file, batched through the tower
    videos = [p for p in files if is_video(p)]
    images = [p for p in files if not is_video(p)]
    code = run_items(args, images, writer, 'extracting', handle) if images else 0
    return max(code, features_of_videos(args, fx, writer, videos, store)) if videos else code


def features_of_videos(args, fx, writer, videos: List[Path], store) -> int:
    taken = {e['name'] for e in writer.summary['processed']}
    failed = False
    for path in videos:
        if args.skip_existing and writer.finished(str(path)):
            continue
        name = unique_name(path.stem, taken)
        frames, index, times = [], [], []
        bar = progress(count_items([path], args.fps), args.quiet, f'frames of {path.name}')
        try:
            with bar:
                for i, t, frame in video_frames(path, args.fps):
                    frames.append(frame)
                    index.append(i)
                    times.append(t)
                    bar.update(1)
            maps = fx.video(frames)
            entry = dict(name=name, source=str(path), files=dict(features=store(name, maps)), frames=index,
                         times=times, shape=list(maps.shape), stride=fx.backbone.patch_size)
            writer.json(f'{name}.json', {k: v for k, v in entry.items() if k != 'files'})
        except (InputError, OutputError, ValueError, MemoryError) as err:
            skipped = Skipped.of(str(path), err)
            report(f'declip-mm: skipped {path}: {skipped.reason}')
            writer.skip(skipped.source, skipped.reason)
            failed = True
            continue
        writer.done(entry)
    print(f'declip-mm features: {len(videos)} video(s); results in {writer.out}', file=sys.stderr, flush=True)
    return 1 if failed else 0


def _vfm_options(args, random: bool):
    """The VFMTeacher and DiffusionTeacher configs that --vfm / --vfm-arch / --sd name (checked before any model):
    a distillation config's model.vfm_teacher (and model.diffusion_teacher), or a weights file and its arch."""
    if args.vfm is None:
        if args.sd is not None or args.vfm_arch is not None:
            raise SetupError('--sd and --vfm-arch go with --vfm (the SD-completed affinity completes the VFM one)')
        return None, None
    path = Path(args.vfm)
    if not path.is_file():
        raise SetupError(f'--vfm {args.vfm}: no such file (a distillation config or the VFM weights file)')
    sd = None
    if path.suffix == '.py':
        if args.vfm_arch is not None:
            raise SetupError('--vfm-arch goes with a --vfm weights file; a config names its own arch')
        from mmengine.config import Config
        try:
            model = Config.fromfile(str(path)).get('model', {})
        except Exception as err:                   # noqa: BLE001 (any error of a user's config file)
            raise SetupError(f'--vfm {args.vfm}: cannot read the config ({type(err).__name__}: {err})') from None
        vfm = model.get('vfm_teacher')
        if not vfm:
            raise SetupError(f'--vfm {args.vfm}: the config has no model.vfm_teacher (a distillation config has)')
        vfm = dict(vfm)
        sd = dict(model['diffusion_teacher']) if model.get('diffusion_teacher') and args.sd is None else None
    else:
        from ..models.teachers.vfm import VFM_ARCHS
        arch = args.vfm_arch or next((a for a in sorted(VFM_ARCHS, key=len, reverse=True)
                                      if a.replace('_reg', '_reg4') in path.name or a in path.name), None)
        if arch not in VFM_ARCHS:
            raise SetupError(f"--vfm {args.vfm}: give --vfm-arch (one of {', '.join(sorted(VFM_ARCHS))})")
        from ..utils.checkpoint_io import check_checkpoint_file
        try:
            check_checkpoint_file(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise SetupError(f'--vfm: {err}') from None
        vfm = dict(type='VFMTeacher', arch=arch, checkpoint=str(path))
    if vfm.get('checkpoint') is None and not random:
        raise SetupError(f'--vfm {args.vfm} names no VFM weights (checkpoint=None): the VFM would be random; give '
                         'its weights, or --random-weights to try it anyway')
    if args.sd is not None:
        if not Path(args.sd).is_dir():
            raise SetupError(f'--sd {args.sd}: not a folder (a Stable Diffusion folder in the diffusers layout)')
        sd = dict(type='DiffusionTeacher', folder=args.sd)
    return vfm, sd


def attention(args) -> int:
    """``declip-mm attention``: for one image and its query points, the attention / affinity panels as a PNG grid
    (``<name>_attention.png``), the raw maps (``<name>_attention.npz``) and a JSON of tokens and settings."""
    from .attention import PointError, check_points, parse_point
    from .inputs import load_image
    image = Path(args.image)
    if args.out is None:
        args.out = f'{image.stem}_attention'
    if args.config is not None:
        given = [flag for flag in ('backbone', 'mode') if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the backbone; drop --{', --'.join(given)}")
    if args.sd_size <= 0 or args.sd_size % 8:
        raise SetupError(f'--sd-size must be a positive multiple of 8, got {args.sd_size}')
    try:
        points = [parse_point(p) for p in args.points]
        rgb = load_image(image)
        points = check_points(points, rgb.shape[:2])
    except (PointError, InputError) as err:
        raise SetupError(str(err)) from None
    random = check_setup(args, text=False)
    vfm, sd = _vfm_options(args, args.random_weights)
    random = random or bool(vfm is not None and vfm.get('checkpoint') is None)
    name = image.stem
    try:
        writer = OutputFolder(Path(args.out), args.command, dict(random_weights=random), overwrite=args.overwrite)
        writer.claim([f'{name}_attention.png', f'{name}_attention.npz', f'{name}.json'])
    except OutputError as err:
        raise SetupError(str(err)) from None

    from .attention import AttentionExplorer
    device = build(device_of, args)
    if args.config is not None:
        ex = build(AttentionExplorer.from_config, args.config, args.checkpoint, device=device,
                   precision=args.precision, long_side=args.long_side, vfm=vfm, sd=sd, sd_size=args.sd_size)
    else:
        ex = build(AttentionExplorer, args.model_name, backbone=args.backbone, device=device,
                   precision=args.precision, mode=args.mode, long_side=args.long_side, vfm=vfm, sd=sd,
                   sd_size=args.sd_size)
    announce(args, random)
    maps = ex(rgb, points, random_weights=random)
    writer.summary['settings'].update(device=str(ex.device), precision=ex.precision, **maps.settings)

    def save_npz(path):
        with open(path, 'wb') as f:
            np.savez(f, **maps.arrays())
    files = dict(figure=writer.image(f'{name}_attention.png', maps.figure(note=RANDOM_NOTE if random else None)),
                 maps=writer._atomic(f'{name}_attention.npz', save_npz))
    entry = dict(name=name, source=str(image), files=files, panels=list(maps.panels),
                 points=[list(p) for p in maps.points], tokens=[list(t) for t in maps.tokens], grid=list(maps.grid),
                 random_weights=random)
    writer.json(f'{name}.json', {k: v for k, v in entry.items() if k != 'files'})
    writer.done(entry)
    return finish(args, writer)


def _attn_scale(value: Optional[str]):
    if value is None or value == '1/sqrt(d)':
        return value
    try:
        return float(value)
    except ValueError:
        raise SetupError(f"--attn-scale must be a number or '1/sqrt(d)', got '{value}'") from None


def export(args) -> int:
    """``declip-mm export --onnx DIR``: the dense image encoder and the text tower as ONNX graphs, their settings
    and optionally a baked vocabulary (``declip_mm/deploy/onnx_export.py``)."""
    from ..constants import SEGMENTATION_PROTOCOL
    if args.config is not None:
        given = [flag for flag in ('backbone', 'text_weights', 'mode', 'attn_scale') if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the model and its protocol; drop --{', --'.join(given).replace('_', '-')}")
    if not 7 <= args.opset <= 23:
        raise SetupError(f'--opset must be an ONNX opset between 7 and 23, got {args.opset}')
    attn_scale = _attn_scale(args.attn_scale)
    vocab = parse_vocabulary(args.vocab) if args.vocab is not None else None
    random = check_setup(args)
    from ..deploy.onnx_export import IMAGE_FILE, MANIFEST, TEXT_FILE, VOCABULARY_EMBEDDINGS, VOCABULARY_FILE
    names = [IMAGE_FILE, TEXT_FILE, MANIFEST] + ([VOCABULARY_FILE, VOCABULARY_EMBEDDINGS] if vocab else [])
    try:
        writer = OutputFolder(Path(args.out), args.command, dict(random_weights=random), overwrite=args.overwrite)
        writer.claim(names)
    except OutputError as err:
        raise SetupError(str(err).replace('--out', '--onnx')) from None
    from ..deploy.onnx_export import OnnxExportError, export_onnx
    from ..registry import MODELS
    if args.config is not None:
        from . import OpenVocabSegmenter
        seg = build(OpenVocabSegmenter.from_config, args.config, args.checkpoint, device='cpu', precision='fp32')
        backbone, text = seg.model.backbone, seg.text_encoder
        backbone.mode = seg.model.mode or backbone.mode          # the protocol's mode is the one the graph runs
    else:
        from mmengine.registry import init_default_scope
        init_default_scope('declip_mm')
        protocol = SEGMENTATION_PROTOCOL
        backbone = build(MODELS.build, dict(type='DeCLIPViT', model_name=args.model_name, pretrained=args.backbone,
                                            mode=protocol.or_default('mode', args.mode), trainable='none',
                                            attn_scale=protocol.or_default('attn_scale', attn_scale)))
        text = build(MODELS.build, dict(type='OpenCLIPTextEncoder', model_name=args.model_name,
                                        pretrained=args.text_weights, embedding_cache=False))
    announce(args, random)
    report(f'declip-mm export: {backbone.model_name}, mode {backbone.mode}, attention scale {backbone.attn_scale:g}'
           f"{f', {len(vocab.classes)} classes baked in' if vocab else ''} -> {args.out}")
    staging = Path(tempfile.mkdtemp(prefix='.declip-mm-export-', dir=args.out))
    try:
        manifest = export_onnx(backbone, text, staging, vocabulary=vocab.classes if vocab else None, opset=args.opset,
                               random_weights=random, sources=dict(
                                   config=args.config, checkpoint=args.checkpoint, backbone=args.backbone,
                                   text_weights=args.text_weights))
        for name in names:                           # every file replaced atomically, only once all were written
            (staging / name).replace(Path(args.out) / name)
    except OnnxExportError as err:
        raise SetupError(str(err)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    writer.done(dict(source='export', files={n: str(Path(args.out) / n) for n in names},
                     model_name=manifest['model_name'], mode=manifest['mode'], attn_scale=manifest['attn_scale'],
                     vocabulary=manifest['vocabulary'], random_weights=random))
    return finish(args, writer)


COMMANDS = dict(segment=segment, detect=detect, features=features, attention=attention, export=export)
