"""Export a DeCLIPViT checkpoint as a full open_clip state dict, or as an open_clip Hugging Face folder.

    python tools/converters/declip_to_open_clip.py SRC DST --text-weights TAG_OR_FILE
    python tools/converters/declip_to_open_clip.py SRC --hf-dir DIR --text-weights TAG_OR_FILE

DeCLIP fine-tunes only the image tower, so the text tower (and logit_scale) come from the original CLIP
weights given by --text-weights (an open_clip tag resolved offline, or a file). The image tower is copied
exactly: converting the result back with DeCLIPViT(model_name, pretrained=DST, mode=..., attn_scale=...)
gives identical tensors. A state-dict file cannot store the mode and scale, so they are printed.

--hf-dir writes the folder open_clip's push_to_hf_hub uploads (open_clip_config.json with model_cfg and
preprocess_cfg, open_clip_model.safetensors, README.md), plus a 'declip' entry in open_clip_config.json (mode,
attn_scale, input_size, model_name; open_clip ignores it): DeCLIPViT(model_name, pretrained=DIR) restores them,
open_clip.create_model('local-dir:DIR') gives the raw CLIP, and uploaded (huggingface-cli upload ORG/NAME DIR)
the folder loads as pretrained='hf-hub:ORG/NAME' from the local Hugging Face cache.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse

import torch

import declip_mm  # noqa: F401
from declip_mm.models import DeCLIPViT, create_clip
from declip_mm.models.backbones.checkpoints import DECLIP_VIT, export_hf_dir, read_checkpoint


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


def export_hf(src: str, folder: str, text_weights=None, strict: bool = True, also_bin: bool = False) -> dict:
    """SRC (a DeCLIPViT checkpoint) -> an open_clip Hugging Face folder; returns the DeCLIP metadata written."""
    export_hf_dir(src, folder, text_weights, strict, 'both' if also_bin else 'safetensors')
    return read_checkpoint(src, mmap=True).meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst', nargs='?', help='the open_clip state-dict file to write (or give --hf-dir)')
    parser.add_argument('--hf-dir', default=None,
                        help="write an open_clip Hugging Face folder there instead (open_clip_config.json with a "
                             "'declip' entry, open_clip_model.safetensors, README.md)")
    parser.add_argument('--also-bin', action='store_true',
                        help='with --hf-dir: also write open_clip_pytorch_model.bin (push_to_hf_hub writes both)')
    parser.add_argument('--text-weights', required=True,
                        help="original CLIP weights for the text tower: open_clip tag or file ('none' = random)")
    args = parser.parse_args(argv)
    if (args.dst is None) == (args.hf_dir is None):
        parser.error('give exactly one of DST and --hf-dir')
    text = None if args.text_weights == 'none' else args.text_weights
    if args.hf_dir is not None:
        meta = export_hf(args.src, args.hf_dir, text, also_bin=args.also_bin)
        print(f"wrote {args.hf_dir}; run it as DeCLIPViT('{meta['model_name']}', pretrained='{args.hf_dir}') "
              f"(mode '{meta['mode']}', attn_scale {meta['attn_scale']} are stored there), or load the raw CLIP "
              f"with open_clip.create_model('local-dir:{args.hf_dir}')")
        return
    meta = export(args.src, args.dst, text)
    print(f"wrote {args.dst}; run it as DeCLIPViT('{meta['model_name']}', pretrained='{args.dst}', "
          f"mode='{meta['mode']}', attn_scale={meta['attn_scale']})")


if __name__ == '__main__':
    main()
