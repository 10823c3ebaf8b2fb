"""Run a benchmark suite (one tools/test.py run per benchmark config) and write a summary table (markdown and json).

    python tools/eval_benchmarks.py --suite training-free CHECKPOINT      # the 8 training-free segmentation benchmarks
    python tools/eval_benchmarks.py --suite catseg CHECKPOINT             # CAT-Seg's six (d2 mIoU), EVA02-B/16
    python tools/eval_benchmarks.py --suite catseg-l14 CHECKPOINT         # the same with the L/14-336 configs
        [--configs-dir DIR] [--prefix PREFIX] [--benchmarks a b ...] [--out DIR] [--cfg-options k=v ...]

CHECKPOINT: anything tools/test.py takes (a DeCLIPViT checkpoint, CLIP weights, a whole-model checkpoint such as a
CAT-Seg ``iter_80000.pth`` or the imported released model), or 'none' for the configs' own weights. A benchmark
whose config or data root is missing is reported as such; the average is marked '(partial)' unless every benchmark
ran. The table has the published reference row beside ours (CAT-Seg: the DeCLIP_CATSeg README's released checkpoint).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mmengine.config import Config

from declip_mm.engine.runner_setup import read_metrics_table

REPO = Path(__file__).resolve().parents[1]

# metric: the key of the table tools/test.py prints ('mIoU' is mmseg's IoUMetric, 'd2/mIoU' our D2IoUMetric)
SUITES = {
    'training-free': dict(
        title='Training-free segmentation', configs_dir='configs/segmentation', prefix='training-free_declip-eva02-b16_',
        benchmarks=['voc21', 'pc60', 'coco-object', 'voc20', 'pc59', 'coco-stuff', 'cityscapes', 'ade20k'],
        metric='mIoU', paper=None),
    'catseg': dict(
        title='CAT-Seg + DeCLIP', configs_dir='configs/catseg', prefix='catseg_declip-eva02-b16_test-',
        benchmarks=['ade847', 'pc459', 'ade150', 'pc59', 'voc20', 'voc20b'], metric='d2/mIoU',
        # DeCLIP's released CAT-Seg EVA02-B/16 (the DeCLIP_CATSeg branch's README; docs/catseg.md)
        paper=dict(name='DeCLIP_CATSeg README, released checkpoint (EVA02-B/16)',
                   values=dict(ade847=15.20, pc459=21.47, ade150=36.57, pc59=60.89, voc20=96.68, voc20b=81.54))),
    'catseg-l14': dict(
        title='CAT-Seg + DeCLIP (EVA02-L/14-336)', configs_dir='configs/catseg',
        prefix='catseg_declip-eva02-l14-336_test-', benchmarks=['ade847', 'pc459', 'ade150', 'pc59', 'voc20', 'voc20b'],
        metric='d2/mIoU', paper=None),
}


def summary_table(benchmarks, results, average, complete, paper=None):
    """Markdown lines: header, ours, and the paper's row when given."""
    def cell(v):
        return 'n/a' if v is None else f'{v:.1f}'
    lines = ['| | ' + ' | '.join(benchmarks) + ' | average |', '|---|' + '---|' * (len(benchmarks) + 1)]
    ours = [results[b].get('value') if results[b].get('status') == 'ok' else None for b in benchmarks]
    lines.append('| ours | ' + ' | '.join(map(cell, ours)) +
                 f" | {cell(average)}{'' if complete or average is None else ' (partial)'} |")
    if paper:
        values = [paper['values'].get(b) for b in benchmarks]
        known = [v for v in values if v is not None]
        lines.append(f"| {paper['name']} | " + ' | '.join(map(cell, values)) +
                     f' | {cell(sum(known) / len(known) if known else None)} |')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help="checkpoint for tools/test.py, or 'none'")
    parser.add_argument('--suite', choices=sorted(SUITES), default='training-free')
    parser.add_argument('--configs-dir', help="default: the suite's")
    parser.add_argument('--prefix', help="config file prefix (default: the suite's)")
    parser.add_argument('--benchmarks', nargs='+', help="default: the suite's")
    parser.add_argument('--out', help='default: work_dirs/eval_<suite>')
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    configs_dir = Path(args.configs_dir or REPO / suite['configs_dir'])
    prefix = suite['prefix'] if args.prefix is None else args.prefix
    benchmarks = args.benchmarks or suite['benchmarks']
    out = Path(args.out or f'work_dirs/eval_{args.suite}')
    out.mkdir(parents=True, exist_ok=True)

    results = {}
    for name in benchmarks:
        config = configs_dir / f'{prefix}{name}.py'
        if not config.is_file():
            results[name] = dict(status=f'missing config {config}')
            print(f'{name}: skipped, {results[name]["status"]}', flush=True)
            continue
        root = Config.fromfile(str(config)).test_dataloader.dataset.data_root
        if not Path(root).is_dir():
            results[name] = dict(status=f'missing data root {root}')
            print(f'{name}: skipped, {results[name]["status"]}', flush=True)
            continue
        cmd = [sys.executable, str(REPO / 'tools/test.py'), str(config)]
        cmd += ['--no-checkpoint'] if args.checkpoint == 'none' else [args.checkpoint]
        cmd += ['--work-dir', str(out / name)]
        if args.cfg_options:
            cmd += ['--cfg-options', *args.cfg_options]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        value = read_metrics_table(proc.stdout).get(suite['metric'])   # the table tools/test.py prints
        if proc.returncode != 0 or value is None:
            results[name] = dict(status='failed', log_tail=(proc.stdout + proc.stderr)[-2000:])
            print(f'{name}: failed\n{results[name]["log_tail"]}', flush=True)
            continue
        results[name] = dict(status='ok', metric=suite['metric'], value=value)
        print(f"{name}: {suite['metric']} {value}", flush=True)

    done = [r['value'] for r in results.values() if r.get('status') == 'ok']
    summary = dict(suite=args.suite, checkpoint=args.checkpoint, metric=suite['metric'], results=results,
                   average=sum(done) / len(done) if done else None, complete=len(done) == len(benchmarks))
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    lines = summary_table(benchmarks, results, summary['average'], summary['complete'], suite['paper'])
    (out / 'summary.md').write_text(f"{suite['title']} ({suite['metric']}), checkpoint {args.checkpoint}\n\n"
                                    + '\n'.join(lines) + '\n')
    print('\n'.join(lines))
    print(f'summary: {out / "summary.md"}, {out / "summary.json"}')


if __name__ == '__main__':
    main()
