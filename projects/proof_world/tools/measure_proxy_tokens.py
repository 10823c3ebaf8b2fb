"""Proxy tokens in the proof world's CLIP: attention concentration per block (proof_world/attention_stats.py) of the
pretrained world CLIP against the same architecture with random weights (and, with --long-steps, a CLIP pretrained
longer), on held-out scenes. Prints a markdown table, writes json.

    python projects/proof_world/tools/measure_proxy_tokens.py                     # default CLIP (cached), 32 scenes
    python projects/proof_world/tools/measure_proxy_tokens.py --long-steps 1200 --json /tmp/proxy_tokens.json

The CLIPs are pretrained with pretrain_clip's default recipe (the one run_ablation.py uses), cached by content hash.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import time

from pretrain_clip import prepare_world, world_arguments  # noqa: E402  (same folder)

COLUMNS = ('entropy', 'top1', 'top{k}', 'cls', 'local')


def load_scenes(world_root, n: int, size: int):
    """The first ``n`` held-out scenes, resized to ``size`` (antialiased bilinear), CLIP-normalised: (n, 3, s, s)."""
    import torch
    import torch.nn.functional as F

    from declip_mm.constants import CLIP_MEAN, CLIP_STD
    from projects.proof_world.proof_world.data import load_split
    images = load_split(world_root, 'val', limit=n).images.float() / 255
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode='bilinear', antialias=True, align_corners=False)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def format_table(results, reference, top_k: int) -> str:
    """Markdown: one row per (model, block), one column per statistic, a last row for uniform attention."""
    names = [c.format(k=top_k) for c in COLUMNS]
    lines = ['| model | block | ' + ' | '.join(names) + ' |', '|---|---|' + '---|' * len(names)]
    for model in results:
        for i, block in enumerate(model['blocks']):
            lines.append(f"| {model['name']} | {i} | " + ' | '.join(f'{block[n]:.3f}' for n in names) + ' |')
    lines.append('| uniform attention | - | ' + ' | '.join(f'{reference[n]:.3f}' for n in names) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    import torch

    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    from projects.proof_world.proof_world.attention_stats import attention_concentration, uniform_reference
    from projects.proof_world.proof_world.cache import proof_cache_dir, read_report
    from projects.proof_world.proof_world.pretrain import CLIP_MODEL, pretrain_clip
    parser = argparse.ArgumentParser(description='Attention concentration (proxy tokens) per block of the world CLIP')
    world_arguments(parser)
    parser.add_argument('--scenes', type=int, default=32, help='held-out scenes measured (the first N)')
    parser.add_argument('--input-size', type=int, default=None, help="default: the CLIP's pretraining size (96)")
    parser.add_argument('--top-k', type=int, default=4, help='proxy keys for the top-k share (top-1 is always shown)')
    parser.add_argument('--head-mean', action='store_true', help='average the attention over heads first')
    parser.add_argument('--long-steps', type=int, default=None,
                        help='also a CLIP pretrained this many steps (default recipe otherwise; cached)')
    parser.add_argument('--json', default=None, help='default: <proof cache>/proxy_tokens.json')
    args = parser.parse_args(argv)
    root = prepare_world(args)
    progress = not args.no_progress

    towers = []                                   # (name, checkpoint or None, report or None)
    for steps in [None] + ([args.long_steps] if args.long_steps else []):
        kwargs = {} if steps is None else dict(steps=steps)
        path = pretrain_clip(root, args.out if steps is None else None, model_name=CLIP_MODEL, seed=args.seed,
                             cache_dir=args.cache, progress=progress, **kwargs)
        report = read_report(path)
        towers.append((f"world CLIP, {report['recipe']['steps']} steps", str(path), report))
    towers.insert(1, ('random weights', None, None))

    top_k = sorted({1, args.top_k})
    results = []
    for name, path, report in towers:
        torch.manual_seed(args.seed)
        tower = DeCLIPViT(CLIP_MODEL, pretrained=path, mode='vanilla', trainable='none').eval()
        size = args.input_size or tower.visual.image_size[0]
        images = load_scenes(root, args.scenes, size)
        start = time.perf_counter()
        blocks = attention_concentration(tower, images, top_k=top_k, head_mean=args.head_mean)
        results.append(dict(name=name, checkpoint=path, blocks=blocks, measure_seconds=time.perf_counter() - start,
                            train_seconds=report and report['train_seconds'],
                            zero_shot_val=report and report.get('zero_shot', {}).get('val')))
    grid = (size // tower.patch_size, size // tower.patch_size)
    reference = uniform_reference(grid, top_k)
    table = format_table(results, reference, args.top_k)
    print(f'world {root}, {args.scenes} held-out scenes at {size} px ({grid[0]}x{grid[1]} patches), '
          f"attention {'averaged over heads' if args.head_mean else 'per head'}\n")
    print(table)
    for r in results:
        print(f"  {r['name']}: {r['checkpoint']}  (trained in "
              f"{'-' if r['train_seconds'] is None else round(r['train_seconds'])} s, measured in "
              f"{r['measure_seconds']:.1f} s)")
    out = _Path(args.json) if args.json else proof_cache_dir(args.cache) / 'proxy_tokens.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(command=' '.join(['python', *_sys.argv]), world=str(root), scenes=args.scenes,
                                   input_size=size, grid=grid, top_k=top_k, head_mean=args.head_mean,
                                   uniform=reference, models=results, table=table), indent=1))
    print(f'json: {out}')


if __name__ == '__main__':
    main()
