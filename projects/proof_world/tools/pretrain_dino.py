"""Pretrain the proof world's DINO-style label-free context teacher (projects/proof_world/proof_world/dino_pretrain.py:
DINO + iBOT self-distillation with lightly), writing the world first if needed.

    python projects/proof_world/tools/pretrain_dino.py        # world and weights in ~/.cache/declip-mm/proof
    python projects/proof_world/tools/pretrain_dino.py --steps 300 --threads 1 --out dino.pt

Prints the cached weights' path, the VFMTeacher config, the training time, the k-NN patch probe (val scenes from 0)
and the selection probe (within-image neighbours on val scenes 100-199).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json

from pretrain_clip import prepare_world, world_arguments  # noqa: E402  (same folder)


def main(argv=None):
    from projects.proof_world.proof_world.cache import read_report
    from projects.proof_world.proof_world.dino_pretrain import PATCH_LOSSES, pretrain_dino
    parser = argparse.ArgumentParser(description='Pretrain the proof world DINO teacher (self-distillation, no labels)')
    world_arguments(parser)
    parser.add_argument('--steps', type=int, default=None, help="default: pretrain_dino's")
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--local-crops', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None)
    parser.add_argument('--patch-loss', choices=PATCH_LOSSES, default=None)
    parser.add_argument('--patch-weight', type=float, default=None)
    args = parser.parse_args(argv)
    root = prepare_world(args)
    kwargs = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, local_crops=args.local_crops,
                                    lr=args.lr, patch_loss=args.patch_loss, patch_weight=args.patch_weight).items()
              if v is not None}
    path, cfg = pretrain_dino(root, args.out, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress,
                              **kwargs)
    report = read_report(path)
    losses = report['losses']
    print(f'world: {root}\nDINO weights: {path}\nvfm_teacher = {cfg}')
    print(f"trained {len(losses)} steps in {report['train_seconds']:.0f} s on {report['threads']} threads; "
          f"loss {losses[0]:.3f} -> {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    print('k-NN patch probe (held-out scenes):', json.dumps(report.get('knn_probe'), indent=1))
    print('selection probe (within-image neighbours):', json.dumps(report.get('selection_probe'), indent=1))


if __name__ == '__main__':
    main()
