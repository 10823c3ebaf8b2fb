"""The whole proof experiment in one call (``run_experiment``), as ``tools/run_ablation.py`` and ``make demo`` run
it: world and towers -> context teachers -> the context-loss weight per teacher chosen on a validation range of
held-out scenes -> every variant with every teacher and seed on the test range -> teacher probes, table with the
paper's checks, plots, overlays, results.json and selection.json in ``out``."""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

TEST_SCENES = (0, 100)          # (first, count) of the held-out scenes the table is measured on
SELECTION_SCENES = (100, 100)   # where settings are chosen: never the test scenes
DEMO_VARIANTS = ('vanilla', 'maskclip', 'csa', 'content_only', 'joint', 'declip')
DEMO_TEACHERS = ('infonce', 'oracle')
FULL_TEACHERS = ('infonce', 'dino', 'sam', 'oracle')
CONTEXT_WEIGHTS = (0.05, 0.25, 1.0)   # tried per teacher by the full run
# what the full run chose on scenes 100-199 for every teacher (docs/proof.md); the reduced run (make demo) uses it
# instead of choosing again, to stay within its time budget
CHOSEN_CONTEXT_WEIGHT = 0.05


@dataclass
class Experiment:
    results: Dict             # {teacher key or '-': AblationResult}
    probes: Dict[str, dict]   # teacher key -> teacher_probe on the test scenes
    selection: Dict           # chosen options per teacher and the rows tried
    paths: Dict               # what write_report wrote


def select_context_weight(inputs, teachers: Sequence, cache: Path, weights: Sequence[float], options: dict,
                          progress: bool = True, log: Callable[[str], None] = print) -> Tuple[dict, dict]:
    """Per teacher, the context-loss weight among ``weights`` with the best DeCLIP mIoU + region top-1 on
    ``SELECTION_SCENES`` (seed 0). -> ({teacher key: {'model.context_loss.loss_weight': w}}, the rows tried)."""
    from .running import run_ablation
    from .teachers import teacher_inputs
    chosen, tried = {}, {}
    if len(weights) == 1:                          # nothing to choose
        return {t.key: {'model.context_loss.loss_weight': weights[0]} for t in teachers}, {}
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


def run_experiment(out: Path, teachers: Sequence[str] = DEMO_TEACHERS, variants: Sequence[str] = DEMO_VARIANTS,
                   seeds: Sequence[int] = (0, 1), weights: Sequence[float] = (CHOSEN_CONTEXT_WEIGHT,),
                   options: Optional[dict] = None, cache_dir: Optional[str] = None, world: Optional[str] = None,
                   world_size: Tuple[int, int, int] = (2000, 200, 128), clip: Optional[str] = None,
                   vfm: Optional[str] = None, overlays: int = 6, progress: bool = True,
                   log: Callable[[str], None] = print) -> Experiment:
    """Run the proof experiment (see the module doc). ``weights``: the context-loss weights to choose from on the
    selection scenes (one: used as it is; none: the configs' 0.25)."""
    from .cache import proof_cache_dir
    from .reporting import format_checks, format_table, write_report
    from .running import run_teacher_ablation
    from .teachers import prepare_teacher, teacher_probe
    from .variants import VARIANT_BY_KEY, prepare_inputs
    options = dict(options or {})
    diffusion = any(VARIANT_BY_KEY[k].uses_diffusion for k in variants)
    log('[1/4] world and pretrained towers (cached after the first run) ...')
    inputs = prepare_inputs(world, *world_size, cache_dir=cache_dir, progress=progress, clip_checkpoint=clip,
                            vfm_checkpoint=vfm, diffusion=diffusion)
    cache = proof_cache_dir(cache_dir)
    prepared = [prepare_teacher(t, inputs.world_root, cache_dir, progress, vfm if t == 'infonce' else None)
                for t in teachers]
    log(f'      world {inputs.world_root}\n      CLIP  {inputs.clip_checkpoint}')
    for t in prepared:
        log(f"      teacher {t.key}: {t.vfm_teacher.get('checkpoint', t.vfm_teacher['type'])}")
    if diffusion:
        log(f"      diffusion UNet {inputs.diffusion_teacher['folder']}")
    chosen, tried = {}, {}
    if len(weights) == 1:
        log(f'[2/4] context-loss weight {weights[0]} for every teacher (what run_ablation.py --full chose on held-out '
            f'scenes {SELECTION_SCENES[0]}-{sum(SELECTION_SCENES) - 1})')
    elif not weights:
        log("[2/4] context-loss weight: the configs' own")
    if weights and any(VARIANT_BY_KEY[k].uses_teacher for k in variants):
        if len(weights) > 1:
            log(f'[2/4] the context-loss weight per teacher, chosen on held-out scenes {SELECTION_SCENES[0]}-'
                f'{sum(SELECTION_SCENES) - 1} (DeCLIP, seed 0, mIoU + region top-1) ...')
        chosen, tried = select_context_weight(inputs, prepared, cache, weights, options, progress, log)
    log(f'[3/4] {len(variants)} variants x {len(prepared)} teachers, seeds {list(seeds)}, measured on held-out '
        f'scenes {TEST_SCENES[0]}-{sum(TEST_SCENES) - 1} ...')
    results = run_teacher_ablation(inputs, prepared, cache, seeds, variants, options, chosen,
                                   first_image=TEST_SCENES[0], max_images=TEST_SCENES[1], progress=progress)
    log('[4/4] teacher probes, table, plots and overlays ...')
    probes = {t.key: teacher_probe(t.vfm_teacher, inputs.world_root, *TEST_SCENES) for t in prepared}
    out = Path(out)
    paths = write_report(results, out, overlays, probes=probes)
    selection = dict(chosen=chosen, tried=tried, selection_scenes=SELECTION_SCENES, test_scenes=TEST_SCENES)
    (out / 'selection.json').write_text(json.dumps(selection, indent=1))
    log('\n' + format_table(results) + '\n\n' + format_checks(results) + '\n')
    log('context teachers on held-out scenes 0-99: within-image thing precision / segment-affinity AUC (things)')
    for key, probe in probes.items():
        log(f"  {key:8s} {probe['within_image_thing_precision']:.3f} / {probe['affinity_thing_auc']:.3f}")
    return Experiment(results, probes, selection, paths)
