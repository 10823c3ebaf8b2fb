"""The proof-of-mechanism ablation (docs/proof.md): world -> pretrained CLIP and context teachers (and the world
diffusion UNet for SD-GSC) -> every variant distilled through projects/proof_world/configs/ and mmengine's Runner
with every teacher -> held-out mIoU and region accuracy, table with the paper's checks, plots, overlays. Everything
is cached (world, towers, distilled backbones, evaluations): a second run trains nothing.

With ``--full`` the context-loss weight is chosen per teacher on held-out scenes 100-199 (``--select-weights``);
without, the weight it chose is used. The table is measured on scenes 0-99 (``proof_world/experiment.py``).

    python projects/proof_world/tools/run_ablation.py --full            # every variant, teacher and seed (docs/proof.md)
    python projects/proof_world/tools/run_ablation.py                   # the reduced set `make demo` runs
    python projects/proof_world/tools/run_ablation.py --teachers oracle --variants content_only joint declip --seeds 0
    python projects/proof_world/tools/run_ablation.py --cfg-options train_cfg.max_iters=160
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def parse_args(argv=None):
    from mmengine.config import DictAction

    from projects.proof_world.proof_world.ablation import TEACHERS, VARIANTS
    from projects.proof_world.proof_world.experiment import (CHOSEN_CONTEXT_WEIGHT, CONTEXT_WEIGHTS, DEMO_TEACHERS,
                                                             DEMO_VARIANTS, FULL_TEACHERS)
    p = argparse.ArgumentParser(description='DeCLIP proof-of-mechanism ablation in the procedural world')
    p.add_argument('--out', default=str(REPO / 'outputs' / 'proof'), help='table, results.json, plots, overlays')
    p.add_argument('--world', default=None, help='world folder (default: in the proof cache, from the sizes below)')
    p.add_argument('--n-train', type=int, default=2000)
    p.add_argument('--n-val', type=int, default=200)
    p.add_argument('--size', type=int, default=128, help='scene side in pixels')
    p.add_argument('--cache', default=None, help='proof cache (default $DECLIP_PROOF_CACHE or ~/.cache/declip-mm/proof)')
    p.add_argument('--clip', default=None, help='world CLIP weights pretrained before (default: pretrain_clip, cached)')
    p.add_argument('--vfm', default=None, help="the 'infonce' teacher's weights pretrained before (default: "
                   'pretrain_vfm, cached)')
    p.add_argument('--full', action='store_true', help='every variant with every teacher, 3 seeds (docs/proof.md)')
    p.add_argument('--teachers', nargs='+', default=None, choices=sorted(TEACHERS),
                   help=f'context teachers (default {" ".join(DEMO_TEACHERS)}; --full: {" ".join(FULL_TEACHERS)})')
    p.add_argument('--seeds', type=int, nargs='+', default=None, help='default 0 1 (--full: 0 1 2)')
    p.add_argument('--variants', nargs='+', default=None, choices=[v.key for v in VARIANTS],
                   help=f'default {" ".join(DEMO_VARIANTS)} (--full: all)')
    p.add_argument('--select-weights', type=float, nargs='*', default=None,
                   help='context-loss weights tried per teacher on held-out scenes 100-199 (DeCLIP, seed 0); the '
                   f"best by mIoU + region top-1 is used for that teacher (--full: {' '.join(map(str, CONTEXT_WEIGHTS))}; "
                   f"otherwise {CHOSEN_CONTEXT_WEIGHT}, what --full chose); none given: the configs' 0.25")
    p.add_argument('--context-weight', type=float, default=None,
                   help='use this context-loss weight with every teacher (no selection; the variants without a '
                   'context loss are unchanged)')
    p.add_argument('--overlays', type=int, default=6, help='held-out scenes drawn as vanilla | DeCLIP | label')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='overrides for every distillation config, key=value as tools/train.py takes them')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    if args.context_weight is not None:
        args.select_weights = [args.context_weight]
    elif args.select_weights is None:
        args.select_weights = list(CONTEXT_WEIGHTS) if args.full else [CHOSEN_CONTEXT_WEIGHT]
    args.teachers = args.teachers or list(FULL_TEACHERS if args.full else DEMO_TEACHERS)
    args.seeds = args.seeds or ([0, 1, 2] if args.full else [0, 1])
    args.variants = args.variants or ([v.key for v in VARIANTS] if args.full else list(DEMO_VARIANTS))
    return args


def main(argv=None):
    args = parse_args(argv)
    from projects.proof_world.proof_world.experiment import run_experiment
    experiment = run_experiment(Path(args.out), args.teachers, args.variants, args.seeds, args.select_weights,
                                dict(args.cfg_options), args.cache, args.world, (args.n_train, args.n_val, args.size),
                                args.clip, args.vfm, args.overlays, not args.no_progress)
    paths = experiment.paths
    print(f"\nresults in {args.out} ({', '.join(p.name for p in paths.values() if isinstance(p, Path))}, "
          f"selection.json, {len(paths['overlays'])} overlays)")


if __name__ == '__main__':
    main()
