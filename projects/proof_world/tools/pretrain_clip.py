"""Pretrain the proof world's tiny CLIP (projects/proof_world/proof_world/pretrain.py), writing the world first if needed.

    python projects/proof_world/tools/pretrain_clip.py                          # world and weights in ~/.cache/declip-mm/proof
    python projects/proof_world/tools/pretrain_clip.py --steps 800 --out clip.pt

Prints the cached weights' path, the training time and the held-out zero-shot presence retrieval.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json


def world_arguments(parser):
    parser.add_argument('--world', default=None, help='world folder (default: in the proof cache, from the sizes)')
    parser.add_argument('--n-train', type=int, default=2000)
    parser.add_argument('--n-val', type=int, default=200)
    parser.add_argument('--size', type=int, default=128, help='scene side in pixels')
    parser.add_argument('--world-seed', type=int, default=0)
    parser.add_argument('--cache', default=None,
                        help='proof cache (default $DECLIP_PROOF_CACHE or ~/.cache/declip-mm/proof)')
    parser.add_argument('--out', default=None, help='also copy the weights (and their .json report) here')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    parser.add_argument('--no-progress', action='store_true')


def prepare_world(args):
    import torch

    from projects.proof_world.proof_world.cache import default_world_root
    from projects.proof_world.proof_world.world import write_world
    if args.threads:
        torch.set_num_threads(args.threads)
    root = _Path(args.world) if args.world else default_world_root(args.n_train, args.n_val, args.size,
                                                                   args.world_seed, args.cache)
    return write_world(root, args.n_train, args.n_val, args.size, args.world_seed, progress=not args.no_progress)


def main(argv=None):
    from projects.proof_world.proof_world.pretrain import CLIP_MODEL, pretrain_clip, read_report
    parser = argparse.ArgumentParser(description='Pretrain the proof world CLIP (open_clip config and ClipLoss)')
    world_arguments(parser)
    parser.add_argument('--model-name', default=CLIP_MODEL)
    parser.add_argument('--steps', type=int, default=None, help='default: pretrain_clip\'s')
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None)
    args = parser.parse_args(argv)
    root = prepare_world(args)
    kwargs = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    path = pretrain_clip(root, args.out, model_name=args.model_name, seed=args.seed, cache_dir=args.cache,
                         progress=not args.no_progress, **kwargs)
    report = read_report(path)
    print(f'world: {root}\nCLIP weights: {path}')
    print(f"trained {len(report['losses'])} steps in {report['train_seconds']:.0f} s on {report['threads']} threads; "
          f"loss {report['losses'][0]:.3f} -> {sum(report['losses'][-20:]) / len(report['losses'][-20:]):.3f}")
    print('zero-shot presence retrieval:', json.dumps(report.get('zero_shot'), indent=1))


if __name__ == '__main__':
    main()
