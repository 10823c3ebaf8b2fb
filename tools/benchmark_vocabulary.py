"""Time and memory of open-vocabulary segmentation against the size of the vocabulary (issue 18 item 10).

    python tools/benchmark_vocabulary.py [--classes 20 2000] [--photo data/sample/photos/2011_000003.jpg]
        [--model-name DeCLIP-Tiny-ViT-16] [--baseline-repo /path/to/an/older/checkout] [--cli] [--compare]
        [--baseline-first] [--json out.json] [--allow-busy] [--threads N]

Each measurement is a fresh Python process (so its peak RSS is its own) with an empty text-embedding cache, on
random weights, fp32, CPU:

* ``api`` rows: ``OpenVocabSegmenter(model)``, then ``set_vocabulary(FILE)`` (the text tower encodes every class x 80
  templates: column *text*), ``seg(photo)`` (*segment*) and the result's JSON summary, overlay and label image
  (*outputs*); *peak RSS* is the whole process's (``wait4``), *text / segment +MB* each phase's peak above the RSS
  it started from (``/proc/self/clear_refs``);
* ``cli`` rows (``--cli``): the command of the issue, ``python -m declip_mm segment PHOTO --vocab FILE
  --random-weights --out DIR``: wall time and peak RSS.

The vocabulary of N classes is the bundled class lists' names (deduplicated, in file order), then
``object kind 1``, ``object kind 2``, ... (the cost depends on the number of names, not on the words: every prompt
is padded to the 77 tokens of the text tower). ``--baseline-repo`` runs the same rows on another checkout (e.g.
``git archive HEAD~1 | tar -x -C /tmp/old``) in the same run; ``--compare`` also checks that both give the same
labels and probabilities. The last rows are the cost per class: the difference between the largest and the smallest
vocabulary over the difference in classes.

Load: the harness (tools/benchmarks/harness.py) records the load average before and after every row and the CPU
share of other processes; rows of a busy machine are marked so. The machine and the load go to the JSON file.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's tools, not an installed package
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.benchmarks import harness
from tools.benchmarks.harness import Column, fmt_sig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = REPO / 'data' / 'sample' / 'photos' / '2011_000003.jpg'
COLUMNS = [Column('classes', 'classes', is_key=True), Column('code', 'code', is_key=True),
           Column('mode', 'mode', is_key=True), Column('wall s', 'wall_s', fmt_sig(3)),
           Column('text s', 'text_s', fmt_sig(3)), Column('segment s', 'segment_s', fmt_sig(3)),
           Column('outputs s', 'outputs_s', fmt_sig(3)), Column('peak RSS MB', 'peak_rss_mb', fmt_sig(4)),
           Column('text +MB', 'text_peak_mb', fmt_sig(3)), Column('segment +MB', 'segment_peak_mb', fmt_sig(4)),
           Column('probs (K, H, W)', 'probs_shape'), Column('max |Δp| vs baseline', 'max_prob_diff'),
           Column('labels equal', 'labels_equal')]

# run in the checkout under test (cwd and PYTHONPATH), so it imports that checkout's declip_mm
CHILD = r'''
import json, os, sys, time
import numpy as np, torch
model, vocab, photo, save, threads = sys.argv[1:6]
if int(threads):
    torch.set_num_threads(int(threads))
def status(name):
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith(name + ':'))
def reset():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return status('VmRSS')
from declip_mm.apis import OpenVocabSegmenter
from PIL import Image
out = dict(threads=torch.get_num_threads())
t = time.perf_counter()
torch.manual_seed(0)
seg = OpenVocabSegmenter(model, precision='fp32')
image = np.array(Image.open(photo).convert('RGB'))
out['build_s'] = time.perf_counter() - t
for phase, fn in (('text', lambda: seg.set_vocabulary(vocab)), ('segment', lambda: seg(image))):
    base = reset()
    t = time.perf_counter()
    res = fn()
    out[phase + '_s'] = time.perf_counter() - t
    out[phase + '_peak_mb'] = status('VmHWM') - base
t = time.perf_counter()
json.dumps(res.summary())
res.overlay()
res.label_image()
out['outputs_s'] = time.perf_counter() - t
out['probs_shape'] = list(res.probs.shape)
if save != '-':
    np.savez(save, labels=res.labels, probs=res.probs)
print('RESULT ' + json.dumps(out))
'''


def vocabulary(n: int) -> list:
    """n distinct class names: the bundled lists' names (each synonym its own class), then 'object kind i'."""
    names, seen = [], set()
    files = sorted(p for p in REPO.glob('declip_mm/**/class_names/*.txt'))
    for path in files:
        for line in path.read_text(encoding='utf-8').splitlines():
            if line.strip().startswith('#'):
                continue
            for name in line.split(';'):
                name, key = name.strip(), ' '.join(name.lower().split())
                if name and ',' not in name and key not in seen:
                    seen.add(key)
                    names.append(name)
    i = 0
    while len(names) < n:
        i += 1
        if f'object kind {i}' not in seen:
            names.append(f'object kind {i}')
    return names[:n]


def run_child(argv, repo: Path, cache: Path):
    """Run ``argv`` in ``repo`` with an empty text-embedding cache -> (stdout + stderr, wall s, peak RSS MB)."""
    env = dict(os.environ, PYTHONPATH=str(repo), DECLIP_CACHE=str(cache))
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f'{argv[:4]} in {repo} failed ({proc.returncode}):\n{output[-3000:]}')
    return output, wall, usage.ru_maxrss / 1024


def measure_one(bench, classes: int, code: str, repo: Path, mode: str, vocab_file: Path, args, work: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix='cache-', dir=work))
    save = work / f'{code}-{classes}.npz' if args.compare else None
    if mode == 'api':
        argv = [sys.executable, '-c', CHILD, args.model_name, str(vocab_file), str(args.photo),
                str(save) if save else '-', str(args.threads or 0)]
    else:
        argv = [sys.executable, '-m', 'declip_mm', 'segment', str(args.photo), '--vocab', str(vocab_file),
                '--random-weights', '--out', tempfile.mkdtemp(prefix='out-', dir=work), '--quiet', '--device',
                'cpu', '--precision', 'fp32', '--model-name', args.model_name]
    with bench.monitor() as monitor:
        output, wall, peak = run_child(argv, repo, cache)
    row = dict(classes=classes, code=code, mode=mode, wall_s=round(wall, 2), peak_rss_mb=round(peak))
    if mode == 'api':
        result = json.loads(next(ln for ln in output.splitlines() if ln.startswith('RESULT '))[7:])
        row.update({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
        row['probs_shape'] = 'x'.join(map(str, result['probs_shape']))
    return bench.add(row, monitor.state)


def compare(rows, work: Path):
    """Per class count: the largest probability difference and label agreement of 'this' against 'baseline'."""
    import numpy as np
    for row in rows:
        if row['code'] != 'this' or row['mode'] != 'api':
            continue
        this, base = work / f"this-{row['classes']}.npz", work / f"baseline-{row['classes']}.npz"
        if this.is_file() and base.is_file():
            a, b = np.load(this), np.load(base)
            if a['probs'].shape == b['probs'].shape:
                row['max_prob_diff'] = f"{float(np.abs(a['probs'] - b['probs']).max()):.1e}"
                row['labels_equal'] = f"{100 * float((a['labels'] == b['labels']).mean()):.4f} %"
            else:
                row['max_prob_diff'] = f"shapes {a['probs'].shape} vs {b['probs'].shape}"


def per_class_rows(bench, rows):
    """(largest - smallest) / (difference in classes) of each time and memory column, per code and mode."""
    out = []
    for code in dict.fromkeys(r['code'] for r in rows):
        for mode in dict.fromkeys(r['mode'] for r in rows):
            group = sorted((r for r in rows if r['code'] == code and r['mode'] == mode), key=lambda r: r['classes'])
            if len(group) < 2:
                continue
            lo, hi = group[0], group[-1]
            n = hi['classes'] - lo['classes']
            row = dict(classes=f"per class ({lo['classes']}->{hi['classes']})", code=code, mode=mode)
            for key in ('wall_s', 'text_s', 'segment_s', 'outputs_s', 'peak_rss_mb', 'text_peak_mb', 'segment_peak_mb'):
                if key in lo and key in hi:
                    row[key] = float(f'{(hi[key] - lo[key]) / n:.3g}')
            out.append(bench.add(row, harness.merge_states([lo['_state'], hi['_state']])))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--classes', type=int, nargs='+', default=[20, 2000], help='vocabulary sizes')
    parser.add_argument('--photo', type=Path, default=DEFAULT_PHOTO, help='the image (default: a sample VOC photo)')
    parser.add_argument('--model-name', default='DeCLIP-Tiny-ViT-16', help='open_clip model (random weights)')
    parser.add_argument('--baseline-repo', type=Path, default=None,
                        help='another checkout to measure in the same run (rows "baseline")')
    parser.add_argument('--cli', action='store_true', help='also time the declip-mm segment command (rows "cli")')
    parser.add_argument('--compare', action='store_true', help='with --baseline-repo: compare labels and probabilities')
    parser.add_argument('--baseline-first', action='store_true', help='measure the baseline before this checkout')
    harness.add_arguments(parser, repeats=1)
    args = parser.parse_args(argv)
    args.no_peak = True
    if not args.photo.is_file():
        parser.error(f'{args.photo}: no such photo (python tools/fetch_sample_data.py fetches the sample photos)')
    bench = harness.Bench('vocabulary', args, 'cpu', title='Vocabulary size: time and memory',
                          note='Random weights, fp32, an empty text-embedding cache, one photo; fresh process per row.')
    print(json.dumps(dict(machine=bench.machine)), flush=True)
    codes = [('this', REPO)] + ([('baseline', args.baseline_repo.resolve())] if args.baseline_repo else [])
    if args.baseline_first:
        codes.reverse()
    with tempfile.TemporaryDirectory(prefix='declip-vocab-bench-') as tmp:
        work = Path(tmp)
        rows = []
        for classes in args.classes:
            vocab_file = work / f'vocab{classes}.txt'
            vocab_file.write_text('\n'.join(vocabulary(classes)) + '\n', encoding='utf-8')
            for code, repo in codes:
                for mode in ['api'] + (['cli'] if args.cli else []):
                    rows.append(measure_one(bench, classes, code, repo, mode, vocab_file, args, work))
        if args.compare:
            compare(rows, work)
        per_class_rows(bench, rows)
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    sys.exit(main())
