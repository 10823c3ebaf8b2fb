"""Pretrain the proof world's SAM-like context teacher on class-agnostic masks
(projects/proof_world/proof_world/sam_pretrain.py), writing the world first if needed.

    python projects/proof_world/tools/pretrain_sam.py                           # world and weights in ~/.cache/declip-mm/proof
    python projects/proof_world/tools/pretrain_sam.py --steps 400 --temperature 0.1 --out sam.pt

Prints the cached weights' path, the VFMTeacher config, the training time, the k-NN patch probe (val scenes
0-99) and the selection probe (val scenes 100-199).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json

from pretrain_clip import prepare_world, world_arguments  # noqa: E402  (same folder)


def main(argv=None):
    from projects.proof_world.proof_world.cache import read_report
    from projects.proof_world.proof_world.sam_pretrain import pretrain_sam
    parser = argparse.ArgumentParser(description='Pretrain the proof world SAM-like teacher (class-agnostic masks)')
    world_arguments(parser)
    parser.add_argument('--steps', type=int, default=None, help='default: pretrain_sam\'s')
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None)
    parser.add_argument('--temperature', type=float, default=None)
    args = parser.parse_args(argv)
    root = prepare_world(args)
    kwargs = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                    temperature=args.temperature).items() if v is not None}
    path, cfg = pretrain_sam(root, args.out, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress,
                             **kwargs)
    report = read_report(path)
    print(f'world: {root}\nSAM-like weights: {path}\nvfm_teacher = {cfg}')
    print(f"trained {len(report['losses'])} steps in {report['train_seconds']:.0f} s on {report['threads']} threads; "
          f"loss {report['losses'][0]:.3f} -> {sum(report['losses'][-20:]) / len(report['losses'][-20:]):.3f}")
    for probe in ('knn_probe', 'selection_probe'):
        print(f'{probe}:', json.dumps(report.get(probe), indent=1))


if __name__ == '__main__':
    main()
