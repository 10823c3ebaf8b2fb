"""Run the 8 training-free segmentation benchmarks and write a summary (markdown and json).

    python tools/eval_training_free.py CHECKPOINT [--configs-dir configs/segmentation] [--out work_dirs/eval]
        [--cfg-options model.mode=vanilla ...] [--launcher none]

CHECKPOINT: a DeCLIPViT checkpoint or CLIP weights file (run with the configs' protocol: csa, 1/sqrt(d)), or
'none' for the configs' original CLIP weights. Benchmarks whose data root is missing are reported as such (see docs/evaluation.md to prepare them).
The paper's 8-benchmark averages (ViT-B/16): 41.9 (CVPR DeCLIP), 44.1 (journal DeCLIP).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mmengine.config import Config

BENCHMARKS = ['voc21', 'pc60', 'coco-object', 'voc20', 'pc59', 'coco-stuff', 'cityscapes', 'ade20k']
REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help="DeCLIPViT checkpoint, or 'none'")
    parser.add_argument('--configs-dir', default=str(REPO / 'configs/segmentation'))
    parser.add_argument('--prefix', default='training-free_declip-eva02-b16_')
    parser.add_argument('--out', default='work_dirs/eval_training_free')
    parser.add_argument('--benchmarks', nargs='+', default=BENCHMARKS)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.benchmarks:
        config = Path(args.configs_dir) / f'{args.prefix}{name}.py'
        if not config.is_file():
            results[name] = dict(status=f'missing config {config}')
            print(f'{name}: skipped, {results[name]["status"]}', flush=True)
            continue
        cfg = Config.fromfile(str(config))
        root = cfg.test_dataloader.dataset.data_root
        if not Path(root).is_dir():
            results[name] = dict(status=f'missing data root {root}')
            print(f'{name}: skipped, {results[name]["status"]}', flush=True)
            continue
        cmd = [sys.executable, str(REPO / 'tools/test.py'), str(config)]
        if args.checkpoint != 'none':
            cmd.append(args.checkpoint)
        else:
            cmd.append('--no-checkpoint')
        cmd += ['--work-dir', str(out / name)]
        if args.cfg_options:
            cmd += ['--cfg-options', *args.cfg_options]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        found = re.findall(r'mIoU: ([0-9.]+)', proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found:
            results[name] = dict(status='failed', log_tail=(proc.stdout + proc.stderr)[-2000:])
            print(f'{name}: failed\n{results[name]["log_tail"]}', flush=True)
            continue
        results[name] = dict(status='ok', mIoU=float(found[-1]))
        print(f'{name}: mIoU {found[-1]}', flush=True)

    done = [r['mIoU'] for r in results.values() if r.get('status') == 'ok']
    summary = dict(checkpoint=args.checkpoint, results=results,
                   average=sum(done) / len(done) if done else None, complete=len(done) == len(args.benchmarks))
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    lines = ['| ' + ' | '.join(args.benchmarks) + ' | average |', '|' + '---|' * (len(args.benchmarks) + 1),
             '| ' + ' | '.join(f"{results[b]['mIoU']:.1f}" if results[b].get('status') == 'ok' else 'n/a'
                               for b in args.benchmarks) +
             f" | {summary['average']:.1f}{'' if summary['complete'] else ' (partial)'} |" if done else
             '| ' + ' | '.join('n/a' for _ in args.benchmarks) + ' | n/a |']
    (out / 'summary.md').write_text(f'Training-free segmentation, checkpoint {args.checkpoint}\n\n' + '\n'.join(lines)
                                    + '\n')
    print('\n'.join(lines))
    print(f'summary: {out / "summary.md"}, {out / "summary.json"}')


if __name__ == '__main__':
    main()
