"""Diagnose what context distillation did to distilled backbones (docs/proof.md, "The oracle finding"): on held-out
scenes, the decoupled block's attention mass on each query's own segment (thing and stuff queries) and the thing
boxes' classification among all classes, among things only, and how many are taken for stuff.

    python projects/proof_world/tools/diagnose_context.py clip <cache>/distill/declip-seed0-*/declip_backbone_final.pth
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('backbones', nargs='+', help="distilled DeCLIPViT checkpoints, or 'clip' (the world CLIP in csa)")
    p.add_argument('--scenes', type=int, nargs=2, default=(0, 100), metavar=('FIRST', 'COUNT'),
                   help='held-out scenes (default the ablation test scenes 0-99)')
    p.add_argument('--cache', default=None, help='proof cache (default $DECLIP_PROOF_CACHE or ~/.cache/declip-mm/proof)')
    args = p.parse_args(argv)
    import torch

    from declip_mm.constants import CLIP_MEAN, CLIP_STD
    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    from declip_mm.models.text.text_encoder import OpenCLIPTextEncoder
    from projects.proof_world.proof_world.ablation import prepare_inputs
    from projects.proof_world.proof_world.data import load_split
    from projects.proof_world.proof_world.diagnostics import (decoupled_attention, segment_attention_mass,
                                                              thing_box_confusion)
    from projects.proof_world.proof_world.probes import patch_labels
    for path in args.backbones:
        if path != 'clip' and not _Path(path).is_file():
            p.error(f'backbone not found: {path}')
    inputs = prepare_inputs(cache_dir=args.cache, progress=False)
    first, count = args.scenes
    data = load_split(inputs.world_root, 'val', first + count)
    images, labels = data.images[first:], data.labels[first:]
    text = OpenCLIPTextEncoder(model_name=inputs.model_name, pretrained=inputs.clip_checkpoint,
                               templates=inputs.templates, embedding_cache=False)(inputs.class_names).embeddings
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    x = (images.float() / 255 - mean) / std
    print('| backbone | own-segment attention, thing queries | stuff queries | thing boxes top-1, all classes | '
          'things only | taken for stuff (%) |\n|---|---|---|---|---|---|')
    for path in args.backbones:
        clip = path == 'clip'
        backbone = DeCLIPViT(model_name=inputs.model_name, pretrained=inputs.clip_checkpoint if clip else path,
                             trainable='none', attn_scale='1/sqrt(d)', mode='csa' if clip else None,
                             input_size=inputs.image_size).eval()
        grid = inputs.image_size // backbone.patch_size
        with torch.no_grad():
            mass = segment_attention_mass(decoupled_attention(backbone, x), patch_labels(labels, grid))
            boxes = thing_box_confusion(backbone.extract_dense(x, normalize=False), text,
                                        data.boxes[first:], data.box_labels[first:], backbone.patch_size)
        name = 'world CLIP (csa)' if clip else _Path(path).parent.name
        print(f"| {name} | {mass['thing_own_segment']:.3f} | {mass['stuff_own_segment']:.3f} | "
              f"{boxes['top1_all']:.1f} | {boxes['top1_things_only']:.1f} | {boxes['predicted_stuff']:.1f} |")


if __name__ == '__main__':
    main()
