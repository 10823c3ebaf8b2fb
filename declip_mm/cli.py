"""``declip-mm``: segment, detect and export dense features of your own images and videos (docs/inference.md).

    declip-mm segment photos/ "holiday/*.jpg" clip.mp4 --vocab "cat,dog,sofa; couch" --background background \
        --model-name EVA02-B-16 --backbone declip_eva02_b16.pth --text-weights merged2b_s8b_b131k --out results/
    declip-mm detect photos/ --config configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py \
        --checkpoint fvit.pth --text-weights merged2b_s8b_b131k --vocab classes.txt --out dets/
    declip-mm features photos/ clip.mp4 --model-name EVA02-B-16 --backbone declip_eva02_b16.pth --out feats/
    declip-mm serve                                   # the local web page

Every input is processed on its own: a file that cannot be read is skipped with a message, counted, and the
run goes on; each result is written as soon as it is computed, and ``<out>/summary.json`` (rewritten after
every input) lists what was done and what was skipped, earlier runs' entries included. A file in the output folder
that this tool did not write is never replaced (``--overwrite`` allows it), and earlier outputs are never taken as
inputs; ``--skip-existing`` resumes an interrupted run. Models with random towers run only with
``--random-weights``, and everything they write says so. Checkpoints are read safely (``--trust-checkpoint`` for
files you trust that hold other pickled objects). Exit status: 0 all done, 1 some inputs skipped (or none could be
processed), 2 a usage / setup error (reported before any model is built), 130 interrupted (Ctrl-C; what was done
is kept and listed).
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List, NamedTuple, Optional, Union

import numpy as np

TINY_PRESETS = ('DeCLIP-Tiny-ViT-16', 'DeCLIP-Tiny-EVA02-16')
MODES = ('csa', 'qq', 'kk', 'vanilla', 'maskclip')          # DeCLIPViT's (checked there too, after building)
RANDOM_NOTE = 'RANDOM WEIGHTS: results are meaningless'


class SetupError(Exception):
    """A problem with the command line or the model set-up: reported as ``declip-mm: error: ...`` (exit 2)."""


class Skipped(NamedTuple):
    source: str
    reason: str

    @classmethod
    def of(cls, source: str, error: Exception) -> 'Skipped':
        """The reason without the file name that input errors start with (the source holds it)."""
        reason = str(error)
        for prefix in (f'{source}: ', f'{Path(source)}: '):
            if reason.startswith(prefix):
                reason = reason[len(prefix):]
        return cls(source, reason)


# ---------------------------------------------------------------------- arguments
def _common(p: argparse.ArgumentParser, weights: bool = True, text: bool = True) -> None:
    p.add_argument('inputs', nargs='+', help='image files, folders, glob patterns ("photos/*.jpg") or videos')
    p.add_argument('--out', required=True, help='output folder (created; existing files of other names are kept)')
    p.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:1' (default: cuda when available)")
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                   help='auto: bf16/fp16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32')
    p.add_argument('--fps', type=float, default=1.0, help='frames per second sampled from videos (default 1)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.add_argument('--overwrite', action='store_true', help='replace files in --out that declip-mm did not write')
    p.add_argument('--skip-existing', action='store_true', help="skip inputs whose results an earlier run wrote "
                   "in --out (resumes an interrupted run)")
    p.add_argument('--trust-checkpoint', action='store_true', help='allow weights files that hold arbitrary pickled '
                   'Python objects (can run code: only for files you trust)')
    if weights:
        p.add_argument('--model-name', default='DeCLIP-Tiny-ViT-16',
                       help="open_clip model of the weights, e.g. EVA02-B-16 (default: the tiny random test preset)")
        p.add_argument('--backbone', default=None, help='DeCLIP weights: a DeCLIPViT checkpoint, a CLIP weights file '
                       'or an open_clip tag (required except for the tiny presets)')
        p.add_argument('--config', default=None, help='build from a config instead (with --checkpoint)')
        p.add_argument('--checkpoint', default=None, help="weights for --config (as tools/test.py takes them)")
        p.add_argument('--random-weights', action='store_true', help='run towers without weights (random: for '
                       'trying the pipeline; every output says so)')
    if text:
        p.add_argument('--text-weights', default=None, help='the ORIGINAL CLIP weights for the text tower (tag or '
                       'file; required except for the tiny presets)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='declip-mm', description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='Run "declip-mm COMMAND --help" for the options of a command.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')

    seg = sub.add_parser('segment', help='open-vocabulary segmentation: overlay PNG, label PNG, JSON scores')
    _common(seg)
    seg.add_argument('--vocab', required=True, help='"cat,dog,sofa; couch" (; separates synonyms), a file with one '
                     'class per line, or bundled:NAME (bundled:voc21, bundled:ade20k, ...)')
    seg.add_argument('--background', default=None, help='the class that gets the low-confidence pixels (added if '
                     'the vocabulary lacks it); default: no background, no threshold')
    seg.add_argument('--bg-thresh', type=float, default=None, help='with --background: pixels whose best class '
                     'probability is below it become background (default 0.2; a config\'s own with --config)')
    seg.add_argument('--logit-scale', type=float, default=None, help='scale of the cosine logits (40)')
    seg.add_argument('--window', type=int, default=None, help='sliding window in network pixels (336; 0 = whole image)')
    seg.add_argument('--stride', type=int, default=None, help='sliding-window stride (112)')
    seg.add_argument('--short-side', type=int, default=None, help='network input short side (the benchmarks\' 448)')
    seg.add_argument('--max-output-pixels', type=int, default=4_000_000,
                     help='outputs of larger images are scaled down to this many pixels (0 = never)')
    seg.add_argument('--mode', default=None, help="dense features: csa (default), qq, kk, vanilla, maskclip")

    det = sub.add_parser('detect', help='open-vocabulary detection with a trained F-ViT: overlay PNG, JSON boxes')
    _common(det, weights=False)
    det.add_argument('--config', required=True, help='F-ViT config (configs/detection/...)')
    det.add_argument('--checkpoint', default=None, help='the trained detector (whole-model checkpoint)')
    det.add_argument('--vocab', required=True, help='as for segment (no background: F-ViT adds its own)')
    det.add_argument('--score-thr', type=float, default=0.3, help='keep detections scoring at least this (0.3)')
    det.add_argument('--random-weights', action='store_true', help='run without --checkpoint / --text-weights '
                     '(random towers and head: for trying the pipeline; every output says so)')

    feat = sub.add_parser('features', help='dense DeCLIP features (.npy / .pt), region and mask embeddings')
    _common(feat, text=False)
    feat.add_argument('--format', default='npy', choices=('npy', 'pt'), help='file format of the features')
    feat.add_argument('--long-side', type=int, default=448, help='network input longest side (rounded up to the '
                      'patch size)')
    feat.add_argument('--raw', action='store_true', help='write the un-normalised map (default: L2-normalised per '
                      'token, ready for cosines with text embeddings)')
    feat.add_argument('--half', action='store_true', help='store features as float16 (half the disk space)')
    feat.add_argument('--boxes', default=None, help='a JSON file {image file name: [[x1, y1, x2, y2], ...]}: '
                      'writes <name>_boxes.<fmt> (n, D) region embeddings')
    feat.add_argument('--masks', default=None, help='a folder of segment-id PNGs named like the images: writes '
                      '<name>_masks.<fmt> (n, D) mask-pooled embeddings of each non-zero id, and the ids')
    feat.add_argument('--mode', default=None, help="the last block's mode (default: the checkpoint's, or csa)")
    feat.add_argument('--batch-size', type=int, default=8, help='video frames per forward')

    sub.add_parser('serve', help='the local web page (declip-mm serve --help)', add_help=False)
    return parser


# ---------------------------------------------------------------------- inputs and outputs
def iter_inputs(files: List[Path], fps: float, taken: set) -> Iterator[Union['InputItem', Skipped]]:
    """Every image, and every sampled frame of every video, as an InputItem, or a Skipped with its reason."""
    from .apis.inputs import InputError, InputItem, is_video, load_image, unique_name, video_frames
    for path in files:
        if is_video(path):
            stem = unique_name(path.stem, taken)
            try:
                for index, t, frame in video_frames(path, fps):
                    yield InputItem(f'{stem}_f{index:06d}', frame, str(path), index, t)
            except InputError as err:
                yield Skipped.of(str(path), err)
            continue
        try:
            image = load_image(path)
        except InputError as err:
            yield Skipped.of(str(path), err)
            continue
        yield InputItem(unique_name(path.stem, taken), image, str(path))


def count_items(files: List[Path], fps: float) -> Optional[int]:
    from .apis.inputs import is_video, video_sample_count
    total = 0
    for p in files:
        n = video_sample_count(p, fps) if is_video(p) else 1
        if n is None:
            return None
        total += n
    return total


def progress(total, quiet, desc):
    from tqdm import tqdm
    return tqdm(total=total, disable=quiet, desc=desc, unit='img', dynamic_ncols=True)


def report(msg: str, bar=None) -> None:
    from tqdm import tqdm
    if bar is not None and not bar.disable:
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def collect(args) -> List[Path]:
    """The input files of the command line (checked before any model is built)."""
    from .apis.inputs import InputError, collect_inputs
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


def open_outputs(args, files: List[Path], settings: dict, outputs_of: Callable[[str], List[str]]):
    """The checked output folder; drops earlier outputs from ``files`` and refuses (before any model is built)
    to replace files this tool did not write there. Returns (folder, files)."""
    from .apis.inputs import is_video, unique_name
    from .apis.outputs import OutputError, OutputFolder
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


def run_items(args, files: List[Path], writer, desc: str, handle) -> int:
    """Feeds every input to ``handle(item) -> summary entry``; skips what cannot be read. Returns the exit code."""
    import torch

    from .apis.inputs import InputError
    from .apis.outputs import OutputError
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


# ---------------------------------------------------------------------- commands
def build(factory, *args, **kwargs):
    """``factory(*args, **kwargs)``; a missing weights file, a file that is not a checkpoint, a bad config key or
    value becomes a SetupError (one line, exit 2)."""
    try:
        return factory(*args, **kwargs)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        raise SetupError(str(err).strip('"').splitlines()[0] if str(err) else type(err).__name__) from None


def _device(args) -> str:
    import torch
    return args.device or ('cuda' if torch.cuda.is_available() else 'cpu')


def check_setup(args, text: bool = True) -> bool:
    """Everything about the command line that needs no model: ranges, flags that go together, weights files
    (readable checkpoints), random towers (only with --random-weights). Returns whether towers are random."""
    from .utils.checkpoint_io import TRUST_ENV, check_checkpoint_file
    check_ranges(args)
    if args.trust_checkpoint:
        os.environ[TRUST_ENV] = '1'
    if args.command != 'detect' and args.config is None and args.checkpoint is not None:
        raise SetupError('--checkpoint goes with --config; for a backbone file use --backbone')
    if args.command != 'detect' and args.config is not None and args.random_weights:
        raise SetupError('--random-weights goes without --config (a config names its own weights)')
    if args.command == 'detect' and not Path(args.config).is_file():
        raise SetupError(f'config file not found: {args.config}')
    for flag in ('backbone', 'checkpoint', 'text_weights'):
        value = getattr(args, flag, None)
        if value is not None and (Path(value).suffix in ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')
                                  or Path(value).exists()):
            try:
                check_checkpoint_file(value)
            except (FileNotFoundError, ValueError) as err:
                raise SetupError(f"--{flag.replace('_', '-')}: {err}") from None
    missing = random_towers(args, text)
    if missing and not args.random_weights:
        what = 'the tiny test preset has no weights' if getattr(args, 'model_name', None) in TINY_PRESETS else \
            'weights are never downloaded'
        raise SetupError(f"no {' or '.join(missing)} given, so the model would run with random weights and "
                         f"meaningless results ({what}): pass {' and '.join(missing)}, or --random-weights to try "
                         'the pipeline anyway')
    return bool(missing)


def cmd_segment(args) -> int:
    from .apis.segmenter import OpenVocabSegmenter
    from .apis.vocabulary import parse_vocabulary
    vocab = parse_vocabulary(args.vocab, args.background)
    if args.bg_thresh is not None and args.background is None:
        raise SetupError('--bg-thresh goes with --background NAME (without a background there is no threshold)')
    if args.config is not None:
        given = [flag for flag in ('backbone', 'text_weights', 'logit_scale', 'window', 'stride', 'short_side', 'mode')
                 if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the model and its protocol; drop --{', --'.join(given).replace('_', '-')}")
    files = collect(args)
    random = check_setup(args)
    writer, files = open_outputs(args, files, dict(vocabulary=vocab.classes, class_names=vocab.names,
                                                   background=vocab.background, random_weights=random),
                                 lambda name: [f'{name}_overlay.png', f'{name}_labels.png', f'{name}.json'])
    device = build(_device, args)
    if args.config is not None:
        seg = build(OpenVocabSegmenter.from_config, args.config, args.checkpoint, device=device,
                    precision=args.precision, bg_thresh=args.bg_thresh, max_output_pixels=args.max_output_pixels)
    else:
        seg = build(OpenVocabSegmenter, args.model_name, backbone=args.backbone, text_weights=args.text_weights,
                    device=device, precision=args.precision, mode=args.mode or 'csa',
                    logit_scale=40.0 if args.logit_scale is None else args.logit_scale,
                    bg_thresh=0.2 if args.bg_thresh is None else args.bg_thresh,
                    window=336 if args.window is None else args.window,
                    stride=112 if args.stride is None else args.stride,
                    short_side=448 if args.short_side is None else args.short_side,
                    max_output_pixels=args.max_output_pixels)
    seg.set_vocabulary(vocab)
    writer.summary['settings'].update(device=str(seg.device), precision=seg.precision,
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


def announce(args, random: bool) -> None:
    if random:
        report(f'declip-mm {args.command}: {RANDOM_NOTE} (--random-weights)')


def cmd_detect(args) -> int:
    from .apis.detector import OpenVocabDetector
    from .apis.vocabulary import parse_vocabulary
    vocab = parse_vocabulary(args.vocab)
    files = collect(args)
    random = check_setup(args)
    writer, files = open_outputs(args, files, dict(vocabulary=vocab.classes, class_names=vocab.names,
                                                   score_thr=args.score_thr, random_weights=random),
                                 lambda name: [f'{name}_overlay.png', f'{name}.json'])
    det = build(OpenVocabDetector, args.config, args.checkpoint, text_weights=args.text_weights,
                backbone='' if args.random_weights and args.checkpoint is None else None,
                device=_device(args), precision=args.precision, score_thr=args.score_thr)
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


def cmd_features(args) -> int:
    import torch

    from .apis.features import DenseFeatureExtractor
    from .apis.inputs import InputError, is_video, load_segment_ids
    if args.config is not None:
        given = [flag for flag in ('backbone', 'mode') if getattr(args, flag) is not None]
        if given:
            raise SetupError(f"--config sets the backbone; drop --{', --'.join(given)}")
    files = collect(args)
    random = check_setup(args, text=False)
    boxes = _read_boxes(args.boxes)
    if args.masks is not None and not Path(args.masks).is_dir():
        raise SetupError(f'--masks {args.masks}: not a folder')
    fmt = args.format
    writer, files = open_outputs(args, files, dict(normalized=not args.raw, format=fmt, random_weights=random),
                                 lambda name: [f'{name}.{fmt}', f'{name}.json', f'{name}_boxes.{fmt}',
                                               f'{name}_masks.{fmt}'])
    device = _device(args)
    if args.config is not None:
        fx = build(DenseFeatureExtractor.from_config, args.config, args.checkpoint, device=device,
                   precision=args.precision, long_side=args.long_side, batch_size=args.batch_size)
    else:
        fx = build(DenseFeatureExtractor, args.model_name, backbone=args.backbone, device=device,
                   precision=args.precision, mode=args.mode, long_side=args.long_side, batch_size=args.batch_size)
    writer.summary['settings'].update(model=fx.backbone.model_name, mode=fx.backbone.mode, long_side=fx.long_side,
                                      device=str(fx.device), precision=fx.precision)
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
    from .apis.inputs import InputError, unique_name, video_frames
    from .apis.outputs import OutputError
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


COMMANDS = dict(segment=cmd_segment, detect=cmd_detect, features=cmd_features)


def main(argv: Optional[List[str]] = None) -> int:
    """The ``declip-mm`` command; returns the exit status (module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['serve']:
        from .apis import web_app                       # provides the page; imported only when asked for
        return web_app.main(argv[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .apis.vocabulary import VocabularyError
    try:
        return COMMANDS[args.command](args)
    except (SetupError, VocabularyError) as err:
        print(f'declip-mm {args.command}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'\ndeclip-mm {args.command}: interrupted; what was done is in {args.out}/summary.json '
              '(--skip-existing resumes)', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
