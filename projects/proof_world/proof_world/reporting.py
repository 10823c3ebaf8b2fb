"""Reporting the ablation (``running.run_teacher_ablation``'s {teacher key or '-': AblationResult}): the markdown
table (one row per variant and context teacher), the paper's checks stated as pass / fail, results.json, the loss
and mIoU plots, and the overlays (vanilla CLIP | DeCLIP | label) of held-out scenes (``write_report``)."""
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .running import AblationResult, evaluate, read_annotations
from .teachers import TEACHERS
from .variants import VARIANT_BY_KEY, VARIANTS, ProofInputs

Results = Dict[str, AblationResult]      # teacher key ('-': the rows without a teacher) -> its variants


def rows(results: Results) -> List[Tuple[str, str]]:
    """(teacher key, variant key) of every row, in the order of ``VARIANTS`` then of the teachers run."""
    order = {v.key: i for i, v in enumerate(VARIANTS)}
    pairs = [(t, k) for t, result in results.items() for k in result.rows]
    teachers = list(results)
    return sorted(pairs, key=lambda p: (order[p[1]], teachers.index(p[0])))


def stat(results: Results, teacher: str, variant: str, metric: str) -> Tuple[float, float, int]:
    """(mean, std, number of seeds) of a row's metric."""
    result = results[teacher]
    mean, std = result.mean_std(variant, metric)
    return mean, std, len(result.rows[variant])


def find(results: Results, variant: str, teacher: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """The row of ``variant`` with ``teacher`` (teacher-free variants: their one row), or None."""
    if not VARIANT_BY_KEY[variant].uses_teacher:
        teacher = '-' if '-' in results else next((t for t in results if variant in results[t].rows), None)
    return (teacher, variant) if teacher in results and variant in results[teacher].rows else None


def format_table(results: Results) -> str:
    """Markdown table: mean ± std over seeds (training-free rows: one deterministic evaluation)."""
    lines = ['| variant | context teacher | evaluated in | seeds | mIoU | region top-1 (things) | region top-5 (things) |',
             '|---|---|---|---|---|---|---|']
    for teacher, key in rows(results):
        v = VARIANT_BY_KEY[key]

        def cell(metric):
            mean, std, n = stat(results, teacher, key, metric)
            return f'{mean:.1f}' if n == 1 else f'{mean:.1f} ± {std:.1f}'
        name = TEACHERS[teacher].name if v.uses_teacher else '-'
        seeds = '-' if not v.distilled else str(len(results[teacher].rows[key]))
        lines.append(f'| {v.name} | {name} | `{v.eval_mode}` | {seeds} | {cell("mIoU")} | {cell("region_top1")} | '
                     f'{cell("region_top5")} |')
    return '\n'.join(lines)


def _beats(results, a, b, metric, sigmas: float = 0.0) -> Optional[bool]:
    """Row a's mean above row b's by more than ``sigmas`` x the larger of their standard deviations."""
    if a is None or b is None:
        return None
    ma, sa, _ = stat(results, *a, metric)
    mb, sb, _ = stat(results, *b, metric)
    return bool(ma - mb > sigmas * max(sa, sb))


CHECKS = {   # kind -> what is checked (per teacher)
    'distilled': 'distilled >> vanilla: DeCLIP at least +5 mIoU over vanilla CLIP',
    'recovers': 'decoupling recovers the region accuracy joint distillation loses: content-only > joint and '
                'DeCLIP > joint (region top-1)',
    'sd_adds': 'SD-GSC adds on top: DeCLIP + SD-GSC > DeCLIP (mIoU)',
    'content_mIoU': 'DeCLIP > content-only, mIoU',
    'content_region_top1': 'DeCLIP > content-only, region top-1',
    'joint_mIoU': 'DeCLIP > joint, mIoU',
    'joint_region_top1': 'DeCLIP > joint, region top-1',
}


def checks(results: Results) -> List[dict]:
    """The paper's first experiments and the issue's targets, per teacher: dicts of kind (a key of ``CHECKS``),
    teacher, passed (True / False; None: rows missing) and the numbers. With the oracle, "DeCLIP > X" asks for
    more than 3 x the larger standard deviation."""
    out = []
    vanilla, content = find(results, 'vanilla'), find(results, 'content_only')
    for t in [t for t in results if t != '-']:
        declip, joint, sd = find(results, 'declip', t), find(results, 'joint', t), find(results, 'declip_sd', t)

        def add(kind, passed, detail=''):
            out.append(dict(kind=kind, teacher=t, passed=passed, detail=detail,
                            check=f'{CHECKS[kind]} [{TEACHERS[t].name}]' + (f': {detail}' if detail else '')))
        if vanilla and declip:
            gain = stat(results, *declip, 'mIoU')[0] - stat(results, *vanilla, 'mIoU')[0]
            add('distilled', bool(gain >= 5), f'{gain:+.1f} mIoU')
        if joint and declip and content:
            lost = _beats(results, content, joint, 'region_top1')
            add('recovers', bool(lost and _beats(results, declip, joint, 'region_top1')))
        if sd and declip:
            add('sd_adds', _beats(results, sd, declip, 'mIoU'))
        for other, label in ((content, 'content'), (joint, 'joint')):
            if declip and other:
                for metric in ('mIoU', 'region_top1'):
                    sigmas = 3.0 if t == 'oracle' else 0.0
                    diff = stat(results, *declip, metric)[0] - stat(results, *other, metric)[0]
                    add(f'{label}_{metric}', _beats(results, declip, other, metric, sigmas),
                        f'{diff:+.1f}' + (', > 3 std asked' if sigmas else ''))
    return out


def format_checks(results: Results) -> str:
    """The checks as a markdown table: one row per check, one column per teacher (PASS / FAIL / n/a, the gap)."""
    marks = {True: 'PASS', False: 'FAIL', None: 'n/a'}
    found = checks(results)
    teachers = list(dict.fromkeys(c['teacher'] for c in found))
    if not teachers:
        return ''
    cell = {(c['kind'], c['teacher']): f"{marks[c['passed']]}" + (f" ({c['detail']})" if c['detail'] else '')
            for c in found}
    lines = ['| check | ' + ' | '.join(TEACHERS[t].name for t in teachers) + ' |',
             '|---|' + '---|' * len(teachers)]
    for kind, text in CHECKS.items():
        if any((kind, t) in cell for t in teachers):
            lines.append(f'| {text} | ' + ' | '.join(cell.get((kind, t), '-') for t in teachers) + ' |')
    return '\n'.join(lines)


def summary(results: Results) -> dict:
    """DeCLIP against the best training-free baseline and content-only (mIoU), per teacher."""
    free = [find(results, k) for k in ('vanilla', 'maskclip', 'csa')]
    free = [f for f in free if f]
    best_free = max(free, key=lambda r: stat(results, *r, 'mIoU')[0]) if free else None
    content = find(results, 'content_only')
    out = {}
    for t in results:
        declip = find(results, 'declip', t) if t != '-' else None
        if declip is None:
            continue
        m = stat(results, *declip, 'mIoU')[0]
        if best_free:
            out[f'declip_minus_best_training_free[{t}]'] = m - stat(results, *best_free, 'mIoU')[0]
        if content:
            out[f'declip_minus_content_only[{t}]'] = m - stat(results, *content, 'mIoU')[0]
    return out


def result_json(results: Results, probes: Optional[Dict[str, dict]] = None) -> dict:
    any_result = next(iter(results.values()))
    return dict(seeds=any_result.seeds, model_name=any_result.inputs.model_name,
                world_root=str(any_result.inputs.world_root), class_names=any_result.inputs.class_names,
                rows=[dict(variant=k, teacher=t, name=VARIANT_BY_KEY[k].name, eval_mode=VARIANT_BY_KEY[k].eval_mode,
                           config=VARIANT_BY_KEY[k].config, vfm_teacher=results[t].inputs.vfm_teacher,
                           evaluations=results[t].rows[k], mIoU=stat(results, t, k, 'mIoU')[:2],
                           region_top1=stat(results, t, k, 'region_top1')[:2],
                           region_top5=stat(results, t, k, 'region_top5')[:2],
                           commands=[r.command for r in results[t].runs.get(k, [])])
                      for t, k in rows(results)],
                checks=checks(results), summary=summary(results), teacher_probes=probes or {})


# ---------------------------------------------------------------------------------------------- pictures
def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _label(teacher: str, variant: str) -> str:
    v = VARIANT_BY_KEY[variant]
    return v.name if not v.uses_teacher else f'{v.name} [{TEACHERS[teacher].name}]'


def plot_losses(results: Results, path: Path, teacher: Optional[str] = None) -> Optional[Path]:
    """One panel per loss term, one line per distilled row (first seed; only ``teacher``'s rows and the
    teacher-free ones when given). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    runs = [(t, k, r[0]) for t, res in results.items() for k, r in res.runs.items()
            if teacher is None or t in (teacher, '-')]
    if not runs:
        return None
    terms = sorted({term for _, _, run in runs for term in run.losses if term != 'loss'}) + ['loss']
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for t, k, run in runs:
            values = run.losses.get(term)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, label=_label(t, k), lw=1.2)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel('iteration', fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=5, loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_miou(results: Results, path: Path, metric: str = 'mIoU') -> Optional[Path]:
    """Bars per variant, one per teacher (mean ± std over seeds, seeds as dots). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    pairs = rows(results)
    variants = list(dict.fromkeys(k for _, k in pairs))
    teachers = [t for t in results if t != '-']
    colours = {t: c for t, c in zip(teachers, ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'))}
    width = 0.8 / max(1, len(teachers))
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(variants)), 3.2))
    for t, k in pairs:
        i = variants.index(k)
        uses = VARIANT_BY_KEY[k].uses_teacher
        x = i + (teachers.index(t) - (len(teachers) - 1) / 2) * width if uses else i
        mean, std, _ = stat(results, t, k, metric)
        ax.bar(x, mean, width=width if uses else 0.5, yerr=std, capsize=2,
               color=colours.get(t, '#9e9e9e') if uses else '#9e9e9e',
               label=TEACHERS[t].name if uses and i == min(variants.index(kk) for tt, kk in pairs if tt == t) else None)
        ax.scatter([x] * len(results[t].rows[k]), [r[metric] for r in results[t].rows[k]], s=5, color='k', zorder=3)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels([VARIANT_BY_KEY[k].name for k in variants], rotation=25, ha='right', fontsize=7)
    ax.set_ylabel(f'{metric} (held-out scenes)', fontsize=8)
    ax.legend(fontsize=6, title='context teacher', title_fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def write_overlays(inputs: ProofInputs, panels: Dict[str, Optional[str]], modes: Dict[str, str], out_dir: Path,
                   indices: Sequence[int], split: str = 'val') -> List[Path]:
    """Side-by-side pictures per held-out scene: one panel per entry of ``panels`` (title -> backbone checkpoint,
    None = the world CLIP, read in ``modes[title]``), then the label."""
    from PIL import Image, ImageDraw

    from declip_mm.apis import overlay
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_annotations(inputs.world_root, split)
    predictions = {title: evaluate(inputs, ckpt, modes[title], split, max_images=max(indices) + 1,
                                   keep=indices)['predictions'] for title, ckpt in panels.items()}
    shown = list(inputs.class_names)
    paths = []
    for i in indices:
        image = np.asarray(Image.open(records[i]['image']).convert('RGB'))
        gt = np.asarray(Image.open(records[i]['label'])).astype(np.int64)
        pictures = [(t, overlay(image, predictions[t][i], shown)) for t in panels]
        pictures.append(('label', overlay(image, np.where(gt == inputs.ignore_index, 0, gt), shown)))
        width = sum(p.width for _, p in pictures) + 8 * (len(pictures) - 1)
        height = max(p.height for _, p in pictures) + 16
        canvas = Image.new('RGB', (width, height), 'white')
        draw = ImageDraw.Draw(canvas)
        x = 0
        for title, picture in pictures:
            draw.text((x + 2, 2), title, fill=(0, 0, 0))
            canvas.paste(picture, (x, 16))
            x += picture.width + 8
        path = out_dir / f'{split}_{i:05d}.png'
        canvas.save(path)
        paths.append(path)
    return paths


def write_report(results: Results, out_dir: Path, overlay_scenes: int = 6, split: str = 'val',
                 probes: Optional[Dict[str, dict]] = None, log: Callable[[str], None] = print) -> dict:
    """results.json, table.md, losses.png, miou.png, region_top1.png and overlays/ (vanilla CLIP | content only |
    DeCLIP per teacher | label) in ``out_dir``. Returns the paths written (plots are None without matplotlib)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(results)
    (out_dir / 'table.md').write_text(table + '\n\n' + format_checks(results) + '\n')
    (out_dir / 'results.json').write_text(json.dumps(result_json(results, probes), indent=1, default=str))
    paths = dict(table=out_dir / 'table.md', results=out_dir / 'results.json')
    first = next((t for t in results if t != '-'), None)
    paths['losses_plot'] = plot_losses(results, out_dir / 'losses.png', first)
    paths['miou_plot'] = plot_miou(results, out_dir / 'miou.png')
    paths['region_plot'] = plot_miou(results, out_dir / 'region_top1.png', 'region_top1')
    if paths['miou_plot'] is None:
        log('  matplotlib is not installed: no plots (the table and results.json hold the numbers)')
    paths['overlays'] = []
    panels, modes = {'vanilla CLIP': None}, {'vanilla CLIP': 'vanilla'}
    found = [find(results, 'content_only')] + [find(results, 'declip', t) for t in results if t != '-']
    for t, k in [row for row in found if row is not None]:
        if k in results[t].runs:
            run = results[t].runs[k][0]
            title = (f'DeCLIP, {t}' if VARIANT_BY_KEY[k].uses_teacher else 'content only') + f' s{run.seed}'
            panels[title], modes[title] = run.backbone, VARIANT_BY_KEY[k].eval_mode
    if overlay_scenes and len(panels) > 1:
        inputs = next(iter(results.values())).inputs
        paths['overlays'] = write_overlays(inputs, panels, modes, out_dir / 'overlays', list(range(overlay_scenes)),
                                           split)
    return paths
