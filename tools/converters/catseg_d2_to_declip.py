"""Import a CAT-Seg checkpoint of the DeCLIP_CATSeg branch (detectron2 keys) into our CATSeg model, with a full key
report: the authors' released CAT-Seg + DeCLIP EVA02-B/16 model then runs through configs/catseg/*.

    python tools/converters/catseg_d2_to_declip.py model_final.pth catseg_declip_b16.pth \
        [--config configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py]
    python tools/test.py configs/catseg/catseg_declip-eva02-b16_test-ade150.py catseg_declip_b16.pth

The conversion (every key group and where it lands, the shift-mask check, rotary tables and the text attention
mask recomputed and reported as ignored) is ``declip_mm.models.backbones.checkpoints`` (format ``catseg_d2``); this
is its command line. Any missing or unexpected key stops the conversion with the list (``--no-strict`` writes it
anyway, still listing them). The file is read safely (tensors, numpy and mmengine types only, as every checkpoint
in this package); ``--trust-checkpoint`` unpickles it in full, for a file you trust that holds other objects.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse

import torch
from mmengine.config import Config

import declip_mm  # noqa: F401
from declip_mm.models.backbones.checkpoints import CATSEG_D2, LoadReport, load_into, read_checkpoint


def convert(src: str, dst: str, config: str, strict: bool = True, trust: bool = False) -> LoadReport:
    """Build the config's CATSeg (no pretrained weights), load the authors' detectron2 checkpoint ``src`` into it
    (checkpoints.load_into: converted, key report, strict) and save it to ``dst`` as an mmengine checkpoint."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    checkpoint = read_checkpoint(src, trust=trust or None)
    if checkpoint.format != CATSEG_D2:
        raise ValueError(f"{src} is not the authors' CAT-Seg detectron2 checkpoint (no sem_seg_head.predictor.* keys); "
                         f'it is {checkpoint.describe()}')
    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = None
    cfg.model.text_pretrained = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    report = load_into(model, checkpoint, strict)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(converted_from=str(src), config=str(config))), dst)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="the authors' detectron2 checkpoint (model_final.pth)")
    parser.add_argument('dst')
    parser.add_argument('--config', default='configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py')
    parser.add_argument('--no-strict', action='store_true')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle any Python object in SRC (can run code: only for a file you trust)')
    args = parser.parse_args(argv)
    report = convert(args.src, args.dst, args.config, not args.no_strict, args.trust_checkpoint)
    print(f'wrote {args.dst}; ignored (recomputed): {len(report.ignored)}; missing: {report.missing}; '
          f'unexpected: {report.unexpected}')


if __name__ == '__main__':
    main()
