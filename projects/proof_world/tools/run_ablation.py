"""The proof-of-mechanism ablation (docs/proof.md): world -> pretrained CLIP and context teachers (and the world
diffusion UNet for SD-GSC) -> every variant distilled through projects/proof_world/configs/ and mmengine's Runner
with every teacher -> held-out mIoU and region accuracy, table with the paper's checks, plots, overlays. Everything
is cached (world, towers, distilled backbones, evaluations): a second run trains nothing.

Settings are chosen on a validation range of the held-out split (scenes 100-199, ``--select-weights``: the
context-loss weight per teacher, by DeCLIP's mIoU + region top-1, seed 0) and the table is measured on scenes 0-99.

    python projects/proof_world/tools/run_ablation.py --full            # every variant, teacher and seed (docs/proof.md)
    python projects/proof_world/tools/run_ablation.py                   # the reduced set `make demo` runs
    python projects/proof_world/tools/run_ablation.py --teachers oracle --variants content_only joint declip --seeds 0
    python projects/proof_world/tools/run_ablation.py --cfg-options train_cfg.max_iters=160
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[3]))  # this clone's declip_mm, whatever is installed
import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEMO_VARIANTS = ('vanilla', 'maskclip', 'csa', 'content_only', 'joint', 'declip')
DEMO_TEACHERS = ('infonce', 'oracle')
FULL_TEACHERS = ('infonce', 'dino', 'sam', 'oracle')
TEST_SCENES = (0, 100)          # (first, count) of the held-out scenes the table is measured on
SELECTION_SCENES = (100, 100)   # where settings are chosen


def parse_args(argv=None):
    from mmengine.config import DictAction

    from projects.proof_world.proof_world.ablation import TEACHERS, VARIANTS
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
    p.add_argument('--select-weights', type=float, nargs='*', default=[0.05, 0.25, 1.0],
                   help='context-loss weights tried per teacher on held-out scenes 100-199 (DeCLIP, seed 0); the '
                   'best by mIoU + region top-1 is used for that teacher; none: the configs\' 0.25')
    p.add_argument('--overlays', type=int, default=6, help='held-out scenes drawn as vanilla | DeCLIP | label')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='overrides for every distillation config, key=value as tools/train.py takes them')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    args.teachers = args.teachers or list(FULL_TEACHERS if args.full else DEMO_TEACHERS)
    args.seeds = args.seeds or ([0, 1, 2] if args.full else [0, 1])
    args.variants = args.variants or ([v.key for v in VARIANTS] if args.full else list(DEMO_VARIANTS))
    return args


def select_weights(inputs, teachers, cache, weights, options, progress, log=print) -> dict:
    """Per teacher, the context-loss weight among ``weights`` with the best DeCLIP mIoU + region top-1 on the
    selection scenes (seed 0). -> {teacher key: {'model.context_loss.loss_weight': w}} and the tried rows."""
    from projects.proof_world.proof_world.ablation import run_ablation, teacher_inputs
    chosen, tried = {}, {}
    for teacher in teachers:
        scores = {}
        for w in weights:
            result = run_ablation(teacher_inputs(inputs, teacher), cache, [0], ['declip'],
                                  dict(options, **{'model.context_loss.loss_weight': w}),
                                  first_image=SELECTION_SCENES[0], max_images=SELECTION_SCENES[1], progress=progress,
                                  log=lambda *_: None)
            row = result.rows['declip'][0]
            scores[w] = dict(mIoU=row['mIoU'], region_top1=row['region_top1'])
        best = max(weights, key=lambda w: scores[w]['mIoU'] + scores[w]['region_top1'])
        chosen[teacher.key] = {'model.context_loss.loss_weight': best}
        tried[teacher.key] = {str(w): s for w, s in scores.items()}
        log(f'      {teacher.key:8s} context weight {best} (' + ', '.join(
            f'{w}: {s["mIoU"]:.1f} / {s["region_top1"]:.1f}' for w, s in scores.items()) + ' mIoU / top-1)')
    return chosen, tried


def main(argv=None):
    args = parse_args(argv)
    import declip_mm  # noqa: F401
    from projects.proof_world.proof_world.ablation import (VARIANT_BY_KEY, format_checks, format_table, prepare_inputs,
                                                           prepare_teacher, run_teacher_ablation, summary,
                                                           teacher_probe, write_report)
    from projects.proof_world.proof_world.cache import proof_cache_dir
    progress = not args.no_progress
    diffusion = any(VARIANT_BY_KEY[k].uses_diffusion for k in args.variants)
    print('[1/4] world and pretrained towers (cached after the first run) ...', flush=True)
    inputs = prepare_inputs(args.world, args.n_train, args.n_val, args.size, cache_dir=args.cache, progress=progress,
                            clip_checkpoint=args.clip, vfm_checkpoint=args.vfm, diffusion=diffusion)
    cache = proof_cache_dir(args.cache)
    teachers = [prepare_teacher(t, inputs.world_root, args.cache, progress, args.vfm if t == 'infonce' else None)
                for t in args.teachers]
    print(f'      world {inputs.world_root}\n      CLIP  {inputs.clip_checkpoint}', flush=True)
    for t in teachers:
        print(f"      teacher {t.key}: {t.vfm_teacher.get('checkpoint', t.vfm_teacher['type'])}", flush=True)
    if diffusion:
        print(f"      diffusion UNet {inputs.diffusion_teacher['folder']}", flush=True)
    options = dict(args.cfg_options)
    teacher_options, tried = {}, {}
    uses_teacher = any(VARIANT_BY_KEY[k].uses_teacher for k in args.variants)
    if args.select_weights and uses_teacher:
        print(f'[2/4] choosing the context-loss weight per teacher on held-out scenes {SELECTION_SCENES[0]}-'
              f'{sum(SELECTION_SCENES) - 1} (DeCLIP, seed 0) ...', flush=True)
        teacher_options, tried = select_weights(inputs, teachers, cache, args.select_weights, options, progress)
    print(f'[3/4] distilling and evaluating {len(args.variants)} variants x {len(teachers)} teachers, seeds '
          f'{args.seeds}, on held-out scenes {TEST_SCENES[0]}-{sum(TEST_SCENES) - 1} ...', flush=True)
    results = run_teacher_ablation(inputs, teachers, cache, args.seeds, args.variants, options, teacher_options,
                                   first_image=TEST_SCENES[0], max_images=TEST_SCENES[1], progress=progress)
    print('[4/4] teacher probes, table, plots and overlays ...', flush=True)
    probes = {t.key: teacher_probe(t.vfm_teacher, inputs.world_root, *TEST_SCENES) for t in teachers}
    paths = write_report(results, Path(args.out), args.overlays, probes=probes)
    (Path(args.out) / 'selection.json').write_text(json.dumps(dict(chosen=teacher_options, tried=tried), indent=1))
    print('\n' + format_table(results) + '\n\n' + format_checks(results) + '\n')
    print('teacher probes (held-out scenes 0-99): within-image thing precision / segment-affinity AUC (things)')
    for key, probe in probes.items():
        print(f"  {key:8s} {probe['within_image_thing_precision']:.3f} / {probe['affinity_thing_auc']:.3f}")
    for key, value in summary(results).items():
        print(f'  {key}: {value:.1f}')
    print(f"\nresults in {args.out} ({', '.join(p.name for p in paths.values() if isinstance(p, Path))}, "
          f"{len(paths['overlays'])} overlays)")


if __name__ == '__main__':
    main()
