"""Export a DeCLIPViT checkpoint as a full open_clip state dict (loadable by open_clip.create_model).

    python tools/converters/declip_to_open_clip.py SRC DST --text-weights TAG_OR_FILE

DeCLIP fine-tunes only the image tower, so the text tower (and logit_scale) come from the original CLIP
weights given by --text-weights (an open_clip tag resolved offline, or a file). The image tower is copied
exactly: converting the result back with DeCLIPViT(model_name, pretrained=DST, mode=..., attn_scale=...)
gives identical tensors. The mode and scale are printed, since open_clip's format cannot store them.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse

import torch

import declip_mm  # noqa: F401
from declip_mm.models import DeCLIPViT, create_clip
from declip_mm.models.backbones.checkpoints import DECLIP_VIT, read_checkpoint


def export(src: str, dst: str, text_weights=None, strict: bool = True) -> dict:
    found = read_checkpoint(src, mmap=True)                     # its metadata; DeCLIPViT reads the weights
    if found.format != DECLIP_VIT:
        raise ValueError(f'{src} is not a DeCLIPViT checkpoint (no meta.declip); it is {found.describe()}')
    meta = found.meta
    backbone = DeCLIPViT(meta['model_name'], pretrained=src)
    clip, _ = create_clip(meta['model_name'], text_weights, strict=strict)
    clip.visual.load_state_dict(backbone.visual.state_dict(), strict=True)
    torch.save(clip.state_dict(), dst)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--text-weights', required=True,
                        help="original CLIP weights for the text tower: open_clip tag or file ('none' = random)")
    args = parser.parse_args(argv)
    meta = export(args.src, args.dst, None if args.text_weights == 'none' else args.text_weights)
    print(f"wrote {args.dst}; run it as DeCLIPViT('{meta['model_name']}', pretrained='{args.dst}', "
          f"mode='{meta['mode']}', attn_scale={meta['attn_scale']})")


if __name__ == '__main__':
    main()
