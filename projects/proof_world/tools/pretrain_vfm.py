"""Pretrain the proof world's label-free context teacher (projects/proof_world/proof_world/vfm_pretrain.py), writing
the world first if needed.

    python projects/proof_world/tools/pretrain_vfm.py                           # world and weights in ~/.cache/declip-mm/proof
    python projects/proof_world/tools/pretrain_vfm.py --steps 400 --out vfm.pt

Prints the cached weights' path, the VFMTeacher config, the training time and the k-NN patch probe.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json

from pretrain_clip import prepare_world, world_arguments  # noqa: E402  (same folder)


def main(argv=None):
    from projects.proof_world.proof_world.cache import read_report
    from projects.proof_world.proof_world.vfm_pretrain import pretrain_vfm
    parser = argparse.ArgumentParser(description='Pretrain the proof world VFM (self-supervised, no labels)')
    world_arguments(parser)
    parser.add_argument('--steps', type=int, default=None, help='default: pretrain_vfm\'s')
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None)
    args = parser.parse_args(argv)
    root = prepare_world(args)
    kwargs = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    path, cfg = pretrain_vfm(root, args.out, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress,
                             **kwargs)
    report = read_report(path)
    print(f'world: {root}\nVFM weights: {path}\nvfm_teacher = {cfg}')
    print(f"trained {len(report['losses'])} steps in {report['train_seconds']:.0f} s on {report['threads']} threads; "
          f"loss {report['losses'][0]:.3f} -> {sum(report['losses'][-20:]) / len(report['losses'][-20:]):.3f}")
    print('k-NN patch probe (held-out scenes):', json.dumps(report.get('knn_probe'), indent=1))


if __name__ == '__main__':
    main()
