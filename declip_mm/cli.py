"""``declip-mm``: segment, detect and export dense features of your own images and videos (docs/inference.md).

    declip-mm segment photos/ "holiday/*.jpg" clip.mp4 --vocab "cat,dog,sofa; couch" --background background \
        --model-name EVA02-B-16 --backbone declip_eva02_b16.pth --text-weights merged2b_s8b_b131k --out results/
    declip-mm detect photos/ --config configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py \
        --checkpoint fvit.pth --text-weights merged2b_s8b_b131k --vocab classes.txt --out dets/
    declip-mm features photos/ clip.mp4 --model-name EVA02-B-16 --backbone declip_eva02_b16.pth --out feats/
    declip-mm attention photo.jpg --points 120,80 400,300 --model-name EVA02-B-16 --backbone declip_eva02_b16.pth
    declip-mm export --onnx declip_onnx/ --model-name EVA02-B-16 --backbone declip_eva02_b16.pth \
        --text-weights merged2b_s8b_b131k [--vocab "cat,dog"]     # then: segment ... --backend onnxruntime \
                                                                   #       --backbone declip_onnx/
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
import sys
from typing import List, Optional

from .constants import SEGMENTATION_PROTOCOL as PROTOCOL
from .constants import DENSE_LONG_SIDE, TINY_MODELS, VIDEO_BATCH_SIZE

# This module only parses the command line and hands the options to declip_mm/apis/runs.py (the commands' work)
# or declip_mm/apis/web_app.py (serve). Its imports are light: `declip-mm --help` and every usage error answer
# before torch is imported (declip_mm/__init__.py says how the package stays unimported until then).


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
        p.add_argument('--model-name', default=TINY_MODELS[0],
                       help="open_clip model of the weights, e.g. EVA02-B-16 (default: the tiny random test preset)")
        p.add_argument('--backbone', default=None, help='DeCLIP weights: a DeCLIPViT checkpoint, a CLIP weights file, '
                       'an open_clip Hugging Face folder, hf-hub:ORG/NAME (local Hugging Face cache only) or an '
                       'open_clip tag (required except for the tiny presets)')
        p.add_argument('--config', default=None, help='build from a config instead (with --checkpoint)')
        p.add_argument('--checkpoint', default=None, help="weights for --config (as tools/test.py takes them)")
        p.add_argument('--random-weights', action='store_true', help='run towers without weights (random: for '
                       'trying the pipeline; every output says so)')
    if text:
        p.add_argument('--text-weights', default=None, help='the ORIGINAL CLIP weights for the text tower (tag or '
                       'file; required except for the tiny presets)')


def _backend(p: argparse.ArgumentParser) -> None:
    p.add_argument('--backend', default='pytorch', choices=('pytorch', 'onnxruntime'),
                   help='onnxruntime: run the ONNX export folder given as --backbone (declip-mm export --onnx; CPU, '
                        'fp32, its mode and scale)')


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
                     f'probability is below it become background (default {PROTOCOL.bg_thresh}; a config\'s own with '
                     '--config)')
    # unset options stay None: the segmenter fills in the protocol's (declip_mm.constants.SEGMENTATION_PROTOCOL)
    seg.add_argument('--logit-scale', type=float, default=None,
                     help=f'scale of the cosine logits ({PROTOCOL.logit_scale:g})')
    seg.add_argument('--window', type=int, default=None,
                     help=f'sliding window in network pixels ({PROTOCOL.window}; 0 = whole image)')
    seg.add_argument('--stride', type=int, default=None, help=f'sliding-window stride ({PROTOCOL.stride})')
    seg.add_argument('--short-side', type=int, default=None,
                     help=f"network input short side (the benchmarks' {PROTOCOL.short_side})")
    seg.add_argument('--max-output-pixels', type=int, default=None,
                     help='outputs of larger images are scaled down to this many pixels (4000000; 0 = never)')
    seg.add_argument('--mode', default=None,
                     help=f'dense features: {PROTOCOL.mode} (default), qq, kk, vanilla, maskclip')
    _backend(seg)

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
    feat.add_argument('--long-side', type=int, default=DENSE_LONG_SIDE,
                      help='network input longest side (rounded up to the patch size)')
    feat.add_argument('--raw', action='store_true', help='write the un-normalised map (default: L2-normalised per '
                      'token, ready for cosines with text embeddings)')
    feat.add_argument('--half', action='store_true', help='store features as float16 (half the disk space)')
    feat.add_argument('--boxes', default=None, help='a JSON file {image file name: [[x1, y1, x2, y2], ...]}: '
                      'writes <name>_boxes.<fmt> (n, D) region embeddings')
    feat.add_argument('--masks', default=None, help='a folder of segment-id PNGs named like the images: writes '
                      '<name>_masks.<fmt> (n, D) mask-pooled embeddings of each non-zero id, and the ids')
    feat.add_argument('--mode', default=None, help="the last block's mode (default: the checkpoint's, or csa)")
    feat.add_argument('--batch-size', type=int, default=VIDEO_BATCH_SIZE, help='video frames per forward')
    _backend(feat)

    att = sub.add_parser('attention', help='attention and affinity maps at points of one image (PNG grid + .npz)')
    att.add_argument('image', help='one image file')
    att.add_argument('--points', nargs='+', required=True, metavar='X,Y',
                     help="query points in the image's pixels, x to the right and y down from the top-left corner")
    att.add_argument('--out', default=None, help='output folder (default: <image name>_attention/ here)')
    att.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:1' (default: cuda when available)")
    att.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                     help='as for segment')
    att.add_argument('--overwrite', action='store_true', help='replace files in --out that declip-mm did not write')
    att.add_argument('--trust-checkpoint', action='store_true', help='allow weights files that hold arbitrary '
                     'pickled Python objects (can run code: only for files you trust)')
    att.add_argument('--model-name', default=TINY_MODELS[0], help='open_clip model of the weights (default: the '
                     'tiny random test preset)')
    att.add_argument('--backbone', default=None, help='DeCLIP weights (as for features)')
    att.add_argument('--config', default=None, help='build from a config instead (with --checkpoint)')
    att.add_argument('--checkpoint', default=None, help='weights for --config')
    att.add_argument('--random-weights', action='store_true', help='run towers without weights (every output says '
                     'so)')
    att.add_argument('--mode', default=None, help="the last block's mode (default: the checkpoint's, or csa)")
    att.add_argument('--long-side', type=int, default=DENSE_LONG_SIDE,
                     help='network input longest side (as for features)')
    att.add_argument('--vfm', default=None, help='adds the VFM affinity: a distillation config (its '
                     'model.vfm_teacher, and model.diffusion_teacher) or the VFM weights file (with --vfm-arch)')
    att.add_argument('--vfm-arch', default=None, help='the VFMTeacher arch of a --vfm weights file (default: read '
                     'from the file name, e.g. dinov2_vitb14_reg4_pretrain.pth -> dinov2_vitb14_reg)')
    att.add_argument('--sd', default=None, help='adds the SD-completed affinity: a Stable Diffusion folder '
                     '(diffusers layout; needs --vfm)')
    att.add_argument('--sd-size', type=int, default=512, help='side of the square SD view (512)')

    exp = sub.add_parser('export', help='ONNX export: dense image encoder, text tower, settings JSON (optionally a '
                         'baked vocabulary) for onnxruntime and other runtimes')
    exp.add_argument('--onnx', dest='out', metavar='DIR', required=True, help='the export folder (created)')
    exp.add_argument('--model-name', default=TINY_MODELS[0], help='open_clip model of the weights (default: the tiny '
                     'random test preset)')
    exp.add_argument('--backbone', default=None, help='DeCLIP weights (as for segment)')
    exp.add_argument('--text-weights', default=None, help='the ORIGINAL CLIP weights for the text tower (as for segment)')
    exp.add_argument('--config', default=None, help='a training-free segmentation config instead (with --checkpoint)')
    exp.add_argument('--checkpoint', default=None, help='weights for --config')
    exp.add_argument('--random-weights', action='store_true', help='export towers without weights (for trying the '
                     'pipeline; the export and everything run with it say so)')
    exp.add_argument('--mode', default=None, help=f"the last block's mode, fixed in the graph ({PROTOCOL.mode}, as "
                     'segment; qq, kk, vanilla, maskclip)')
    exp.add_argument('--attn-scale', default=None, help=f"the attention scale, fixed in the graph "
                     f"({PROTOCOL.attn_scale}, as segment; or a number)")
    exp.add_argument('--vocab', default=None, help="bake this vocabulary's text embeddings into the image graph "
                     '(as for segment): it then also outputs every token\'s cosine with each text query')
    exp.add_argument('--opset', type=int, default=18, help='ONNX opset (18)')
    exp.add_argument('--overwrite', action='store_true', help='replace files in the folder that declip-mm did not write')
    exp.add_argument('--trust-checkpoint', action='store_true', help='allow weights files that hold arbitrary pickled '
                     'Python objects (can run code: only for files you trust)')
    exp.set_defaults(skip_existing=False)

    sub.add_parser('serve', help='the local web page (declip-mm serve --help)', add_help=False)
    return parser


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
    from .apis.runs import COMMANDS, SetupError
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
