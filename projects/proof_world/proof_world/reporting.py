"""Reporting the ablation: the markdown table, the summary and results.json, the loss and mIoU plots, and the
overlays (vanilla CLIP | DeCLIP | label) of held-out scenes (``write_report``)."""
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .running import AblationResult, evaluate, read_annotations
from .variants import VARIANT_BY_KEY, ProofInputs


def format_table(result: AblationResult) -> str:
    """Markdown table: mean ± std over seeds (training-free rows: one deterministic evaluation)."""
    lines = ['| variant | evaluated in | seeds | mIoU | region top-1 (things) | region top-5 (things) |',
             '|---|---|---|---|---|---|']
    for key, rows in result.rows.items():
        v = VARIANT_BY_KEY[key]

        def cell(metric):
            mean, std = result.mean_std(key, metric)
            return f'{mean:.1f}' if len(rows) == 1 else f'{mean:.1f} ± {std:.1f}'
        seeds = '-' if not v.distilled else str(len(rows))
        lines.append(f'| {v.name} | `{v.eval_mode}` | {seeds} | {cell("mIoU")} | {cell("region_top1")} | '
                     f'{cell("region_top5")} |')
    return '\n'.join(lines)


def summary(result: AblationResult) -> dict:
    """The issue's target, checked: DeCLIP vs the best training-free baseline and vs content-only (mIoU)."""
    free = [k for k in result.rows if not VARIANT_BY_KEY[k].distilled]
    best_free = max(free, key=lambda k: result.mean_std(k, 'mIoU')[0]) if free else None
    out = {}
    if 'declip' in result.rows:
        declip = result.mean_std('declip', 'mIoU')[0]
        if best_free:
            out['best_training_free'] = best_free
            out['declip_minus_best_training_free'] = declip - result.mean_std(best_free, 'mIoU')[0]
        if 'content_only' in result.rows:
            out['declip_minus_content_only'] = declip - result.mean_std('content_only', 'mIoU')[0]
        out['target_met'] = bool(out.get('declip_minus_best_training_free', -1) >= 5
                                 and out.get('declip_minus_content_only', -1) > 0)
    return out


def result_json(result: AblationResult) -> dict:
    return dict(seeds=result.seeds, model_name=result.inputs.model_name, world_root=str(result.inputs.world_root),
                class_names=result.inputs.class_names,
                variants={k: dict(name=VARIANT_BY_KEY[k].name, eval_mode=VARIANT_BY_KEY[k].eval_mode,
                                  config=VARIANT_BY_KEY[k].config, rows=rows,
                                  mIoU=result.mean_std(k, 'mIoU'), region_top1=result.mean_std(k, 'region_top1'),
                                  commands=[r.command for r in result.runs.get(k, [])])
                          for k, rows in result.rows.items()},
                summary=summary(result))


# ---------------------------------------------------------------------------------------------- pictures
def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plot_losses(result: AblationResult, path: Path) -> Optional[Path]:
    """One panel per loss term, one line per distilled variant (first seed). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    terms = sorted({t for runs in result.runs.values() for t in runs[0].losses if t != 'loss'}) + ['loss']
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for key, runs in result.runs.items():
            values = runs[0].losses.get(term)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, label=VARIANT_BY_KEY[key].name, lw=1.2)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel('iteration', fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=6, loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_miou(result: AblationResult, path: Path) -> Optional[Path]:
    """Bar chart of mIoU per variant (mean ± std over seeds, seeds as dots). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    keys = list(result.rows)
    means = [result.mean_std(k, 'mIoU')[0] for k in keys]
    stds = [result.mean_std(k, 'mIoU')[1] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 3))
    colours = ['#9e9e9e' if not VARIANT_BY_KEY[k].distilled else '#1f77b4' for k in keys]
    colours = ['#d62728' if k.startswith('declip') else c for k, c in zip(keys, colours)]
    ax.bar(range(len(keys)), means, yerr=stds, color=colours, capsize=3)
    for i, k in enumerate(keys):
        ax.scatter([i] * len(result.rows[k]), [r['mIoU'] for r in result.rows[k]], s=8, color='k', zorder=3)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([VARIANT_BY_KEY[k].name for k in keys], rotation=25, ha='right', fontsize=7)
    ax.set_ylabel('mIoU (held-out scenes)', fontsize=8)
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


def write_report(result: AblationResult, out_dir: Path, overlay_scenes: int = 6, split: str = 'val',
                 log: Callable[[str], None] = print) -> dict:
    """results.json, table.md, losses.png, miou.png and overlays/ (vanilla CLIP | DeCLIP | label) in ``out_dir``.
    Returns the paths written (plots are None without matplotlib)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(result)
    (out_dir / 'table.md').write_text(table + '\n')
    (out_dir / 'results.json').write_text(json.dumps(result_json(result), indent=1))
    paths = dict(table=out_dir / 'table.md', results=out_dir / 'results.json')
    paths['losses_plot'] = plot_losses(result, out_dir / 'losses.png') if result.runs else None
    paths['miou_plot'] = plot_miou(result, out_dir / 'miou.png')
    if paths['miou_plot'] is None:
        log('  matplotlib is not installed: no plots (the table and results.json hold the numbers)')
    paths['overlays'] = []
    if overlay_scenes and 'declip' in result.runs:
        panels = {'vanilla CLIP': None, 'DeCLIP (seed %d)' % result.runs['declip'][0].seed:
                  result.runs['declip'][0].backbone}
        modes = {'vanilla CLIP': 'vanilla', 'DeCLIP (seed %d)' % result.runs['declip'][0].seed: 'csa'}
        paths['overlays'] = write_overlays(result.inputs, panels, modes, out_dir / 'overlays',
                                           list(range(overlay_scenes)), split)
    return paths
