"""Pretrain the proof world's pixel-space diffusion teacher (projects/proof_world/proof_world/diffusion_pretrain.py),
writing the world first if needed.

    python projects/proof_world/tools/pretrain_diffusion.py              # world and folder in ~/.cache/declip-mm/proof
    python projects/proof_world/tools/pretrain_diffusion.py --steps 60 --out sd_proof/
    python projects/proof_world/tools/pretrain_diffusion.py --probe-scenes 0 100 --with-vfm --timestep 250

Prints the cached folder, the DiffusionTeacher config, the training time and the attention grouping probe (the
report's, on val 100-199; ``--probe-scenes`` also probes other val scenes with the given layers / timestep, and
``--with-vfm`` adds the VFM affinity alone and completed with the diffusion attention).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json

from pretrain_clip import prepare_world, world_arguments  # noqa: E402  (same folder)


def main(argv=None):
    from projects.proof_world.proof_world.diffusion_pretrain import (attention_grouping, diffusion_teacher_cfg,
                                                                     pretrain_diffusion, random_init_folder,
                                                                     read_diffusion_report)
    parser = argparse.ArgumentParser(description='Pretrain the proof world diffusion teacher (DDPM, no labels)')
    world_arguments(parser)
    parser.add_argument('--steps', type=int, default=None, help='default: pretrain_diffusion\'s')
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--lr', type=float, default=None)
    parser.add_argument('--probe-scenes', type=int, nargs=2, default=None, metavar=('START', 'STOP'),
                        help='also probe these val scenes (trained and random init)')
    parser.add_argument('--layers', nargs='+', default=None, help='layer patterns of that probe')
    parser.add_argument('--timestep', type=int, default=None, help='timestep of that probe')
    parser.add_argument('--with-vfm', action='store_true', help='that probe also completes the world VFM affinity')
    args = parser.parse_args(argv)
    root = prepare_world(args)
    kwargs = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    folder, cfg = pretrain_diffusion(root, args.out, seed=args.seed, cache_dir=args.cache,
                                     progress=not args.no_progress, **kwargs)
    report = read_diffusion_report(folder)
    print(f'world: {root}\ndiffusion folder: {folder}\ndiffusion_teacher = {cfg}')
    print(f"trained {len(report['losses'])} steps in {report['train_seconds']:.0f} s on {report['threads']} threads "
          f"({report['cpu']}); loss {report['losses'][0]:.3f} -> "
          f"{sum(report['losses'][-20:]) / len(report['losses'][-20:]):.3f}")
    print('attention grouping probe:', json.dumps(report.get('grouping_probe'), indent=1))
    if args.probe_scenes:
        import tempfile

        from declip_mm.models import DiffusionTeacher, VFMTeacher
        vfm = None
        if args.with_vfm:
            from projects.proof_world.proof_world.vfm_pretrain import pretrain_vfm
            _, vfm_cfg = pretrain_vfm(root, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress)
            vfm = VFMTeacher(**{k: v for k, v in vfm_cfg.items() if k != 'type'})
        overrides = {k: v for k, v in dict(layers=args.layers, timestep=args.timestep).items() if v is not None}
        with tempfile.TemporaryDirectory() as random_dir:
            for name, path in (('trained', folder), ('random_init', random_init_folder(_Path(random_dir)))):
                teacher_cfg = dict(diffusion_teacher_cfg(path), **overrides)
                teacher = DiffusionTeacher(**{k: v for k, v in teacher_cfg.items() if k != 'type'})
                print(name, json.dumps(attention_grouping(teacher, root, tuple(args.probe_scenes), vfm=vfm)))


if __name__ == '__main__':
    main()
