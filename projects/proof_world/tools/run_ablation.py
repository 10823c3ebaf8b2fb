"""The proof-of-mechanism ablation (docs/proof.md): world -> pretrained CLIP and VFM -> every variant
distilled through projects/proof_world/configs/ and mmengine's Runner -> held-out mIoU and region accuracy, table, plots,
overlays. Everything is cached (world, towers, distilled backbones, evaluations): a second run trains nothing.

    python projects/proof_world/tools/run_ablation.py                        # the documented run (docs/proof.md)
    python projects/proof_world/tools/run_ablation.py --seeds 0 --variants csa declip --out outputs/proof
    python projects/proof_world/tools/run_ablation.py --cfg-options train_cfg.max_epochs=4 model.context_loss.loss_weight=1.0
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def parse_args(argv=None):
    from mmengine.config import DictAction

    from projects.proof_world.proof_world.ablation import VARIANTS
    p = argparse.ArgumentParser(description='DeCLIP proof-of-mechanism ablation in the procedural world')
    p.add_argument('--out', default=str(REPO / 'outputs' / 'proof'), help='table, results.json, plots, overlays')
    p.add_argument('--world', default=None, help='world folder (default: in the proof cache, from the sizes below)')
    p.add_argument('--n-train', type=int, default=2000)
    p.add_argument('--n-val', type=int, default=200)
    p.add_argument('--size', type=int, default=128, help='scene side in pixels')
    p.add_argument('--cache', default=None, help='proof cache (default $DECLIP_PROOF_CACHE or ~/.cache/declip-mm/proof)')
    p.add_argument('--clip', default=None, help='world CLIP weights pretrained before (default: pretrain_clip, cached)')
    p.add_argument('--vfm', default=None, help='world VFM weights pretrained before (default: pretrain_vfm, cached)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--variants', nargs='+', default=[v.key for v in VARIANTS], choices=[v.key for v in VARIANTS])
    p.add_argument('--max-images', type=int, default=None, help='evaluate on the first N held-out scenes only')
    p.add_argument('--overlays', type=int, default=6, help='held-out scenes drawn as vanilla | DeCLIP | label')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='overrides for every distillation config, key=value as tools/train.py takes them')
    p.add_argument('--no-progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import declip_mm  # noqa: F401
    from projects.proof_world.proof_world.ablation import format_table, prepare_inputs, run_ablation, summary, write_report
    from projects.proof_world.proof_world.cache import proof_cache_dir
    progress = not args.no_progress
    print('[1/3] world and pretrained towers (cached after the first run) ...', flush=True)
    inputs = prepare_inputs(args.world, args.n_train, args.n_val, args.size, cache_dir=args.cache, progress=progress,
                            clip_checkpoint=args.clip, vfm_checkpoint=args.vfm)
    cache = proof_cache_dir(args.cache)
    print(f'      world {inputs.world_root}\n      CLIP  {inputs.clip_checkpoint}\n'
          f"      VFM   {inputs.vfm_teacher.get('checkpoint')}", flush=True)
    print(f'[2/3] distilling and evaluating {len(args.variants)} variants, seeds {args.seeds} ...', flush=True)
    result = run_ablation(inputs, cache, args.seeds, args.variants, dict(args.cfg_options), max_images=args.max_images,
                          progress=progress)
    print('[3/3] table, plots and overlays ...', flush=True)
    paths = write_report(result, Path(args.out), args.overlays)
    print('\n' + format_table(result) + '\n')
    for key, value in summary(result).items():
        print(f'  {key}: {value:.1f}' if isinstance(value, float) else f'  {key}: {value}')
    print(f"\nresults in {args.out} ({', '.join(p.name for p in paths.values() if isinstance(p, Path))}, "
          f"{len(paths['overlays'])} overlays)")


if __name__ == '__main__':
    main()
