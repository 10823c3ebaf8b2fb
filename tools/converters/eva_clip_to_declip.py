"""Convert an authors' EVA-CLIP / DeCLIP checkpoint (visual.blocks.N.attn.q_proj.weight, q_bias, rope.*, ...)
into a DeCLIPViT checkpoint that stores the mode and attention scale it must be run with.

    python tools/converters/eva_clip_to_declip.py SRC DST --model-name EVA02-B-16 --mode csa --attn-scale 1.0 \
        [--input-size 560]

--attn-scale records the scale the weights were DISTILLED with: 1.0 for checkpoints from the authors'
training code (their distillation, F-ViT and CAT-Seg code leave 1/sqrt(d) out), '1/sqrt(d)' for ours with the
journal config. It is the default wherever the checkpoint is used; the training-free segmentation configs
override it with 1/sqrt(d), as the authors' segmentation code runs every checkpoint (a logged warning), so no
value is "right for segmentation" here. Missing or unexpected keys stop the conversion (they are listed).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse

import declip_mm  # noqa: F401
from declip_mm.models import DeCLIPViT
from declip_mm.models.backbones.declip_vit import INV_SQRT_HEAD_DIM


def convert(src: str, dst: str, model_name: str, mode: str, attn_scale: float, input_size=None,
            strict: bool = True) -> DeCLIPViT:
    model = DeCLIPViT(model_name, pretrained=src, mode=mode, attn_scale=attn_scale, input_size=input_size,
                      strict=strict)
    model.save_checkpoint(dst, converted_from=str(src))
    return model


def attn_scale_arg(text: str):
    return text if text == INV_SQRT_HEAD_DIM else float(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--model-name', required=True, help='open_clip model name, e.g. EVA02-B-16')
    parser.add_argument('--mode', required=True, choices=['csa', 'qq', 'kk', 'vanilla', 'maskclip'])
    parser.add_argument('--attn-scale', required=True, type=attn_scale_arg,
                        help="the scale the weights were distilled with: 1.0 (authors' code) or '1/sqrt(d)'")
    parser.add_argument('--input-size', type=int, default=None)
    parser.add_argument('--no-strict', action='store_true', help='convert despite key mismatches (still listed)')
    args = parser.parse_args(argv)
    model = convert(args.src, args.dst, args.model_name, args.mode, args.attn_scale, args.input_size,
                    not args.no_strict)
    print(f'wrote {args.dst}: {model.declip_meta()}')


if __name__ == '__main__':
    main()
