"""Speed and peak memory of DeCLIPViT dense extraction, per model, input size and precision.

    python tools/benchmark_backbone.py [--models EVA02-B-16 ViT-B-16] [--sizes 224 448 560] [--batch 1]
        [--dtypes fp32 bf16] [--mode csa] [--repeats 3] [--compare-attention] [--profile]
        [--markdown docs/benchmarks.md] [--allow-busy]

Weights are random (the architecture, not the values, sets the cost). Each configuration runs in a fresh
subprocess. Memory is the peak extra memory of extraction over the loaded model (the activations' peak):
on CUDA from torch.cuda.max_memory_allocated; on CPU from the process's peak resident set size (Linux VmHWM,
reset through /proc/self/clear_refs, in a second run that allocates large blocks with mmap so freed memory
leaves the RSS). bf16 / fp16 rows run under torch.autocast and report the mean cosine similarity of their dense
features to the fp32 ones. GFLOP per image: tools/benchmarks/flops.py ``vit_flops``; share of the matmul peak of
the same precision, measured in the same run. Timing, load watching and the markdown rows: tools/benchmarks/harness.py.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm and tools, not an installed one
import argparse
import json
import os
import subprocess
import sys

import torch

from tools.benchmarks import harness
from tools.benchmarks.harness import Column, fmt_percent, fmt_sig
from tools.benchmarks.harness import proc_status_mb, reset_cpu_peak  # noqa: F401 (old import path)
from tools.benchmarks.roofline import add_profile_summary, add_roofline, profile_ops

AUTOCAST = dict(bf16=torch.bfloat16, fp16=torch.float16)
COLUMNS = [Column('model', 'model', is_key=True), Column('input', 'size', is_key=True), Column('tokens', 'tokens'),
           Column('device', 'device', is_key=True), Column('precision', 'dtype', is_key=True),
           Column('batch', 'batch', is_key=True), Column('ms / image (min)', 'ms_per_image', fmt_sig(3)),
           Column('ms / image (median)', 'ms_per_image_median', fmt_sig(3)),
           Column('GFLOP / image', 'gflop', fmt_sig(4)), Column('GFLOP/s', 'gflops', fmt_sig(3)),
           Column('% of peak', 'peak_share', fmt_percent),
           Column('peak extra memory (MB)', 'peak_mb', lambda v: f'{v:.0f}'),
           Column('cosine to fp32', 'cosine_to_fp32', lambda v: f'{v:.5f}')]
ATTENTION_COLUMNS = [Column('tokens', 'tokens', is_key=True), Column('device', 'device', is_key=True),
                     Column('SDPA ms (min)', 'sdpa_ms', fmt_sig(3)),
                     Column('explicit ms (min)', 'naive_ms', fmt_sig(3)),
                     Column('max abs difference', 'diff', lambda v: f'{v:.1e}')]


def measure(model_name, size, batch, dtype, mode, repeats, device, profile=False):
    """Run in a child process: one configuration; prints a JSON line."""
    import declip_mm  # noqa: F401
    from declip_mm.models import DeCLIPViT
    from tools.benchmarks.flops import vit_flops
    torch.manual_seed(0)
    model = DeCLIPViT(model_name, mode=mode, trainable='none').eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    out = {}
    with torch.no_grad():
        base_mb = harness.memory_start(device)
        with torch.autocast(device_type=device, dtype=AUTOCAST.get(dtype, torch.bfloat16), enabled=dtype in AUTOCAST):
            timing = harness.measure(lambda: out.__setitem__('y', model.extract_dense(x)), repeats, device)
            summary = profile_ops(lambda: model.extract_dense(x), device) if profile else None
        peak_mb = harness.memory_peak(device, base_mb)
        reference = model.extract_dense(x) if dtype in AUTOCAST else None
    row = dict(model=model_name, size=size, batch=batch, dtype=dtype, mode=mode, ms_per_image=1000 * timing.min / batch,
               ms_per_image_median=1000 * timing.median / batch, times_s=timing.times, state=timing.state.as_dict(),
               peak_mb=peak_mb, tokens=(size // model.patch_size) ** 2, flops=vit_flops(model, size, size, mode, 1),
               profile=summary)
    if reference is not None:
        row['cosine_to_fp32'] = float(torch.nn.functional.cosine_similarity(out['y'].float(), reference, dim=1).mean())
    print(json.dumps(row))


def compare_attention(bench, tokens_list=(197, 1226, 2305, 4097), heads=12, head_dim=64):
    """The decoupled 'csa' attention for one image: SDPA vs explicit softmax matrices (fp32, this device)."""
    from declip_mm.models.backbones.decoupled_attention import decoupled_attention

    def naive(q, k, v, s):
        return (torch.softmax(s * q @ q.transpose(-1, -2), -1) + torch.softmax(s * k @ k.transpose(-1, -2), -1)) @ v

    rows = []
    for n in tokens_list:
        q, k, v = (torch.randn(1, heads, n, head_dim, device=bench.device) for _ in range(3))
        fast, slow = decoupled_attention(q, k, v, 'csa', 0.125), naive(q, k, v, 0.125)
        t_fast = bench.measure(lambda: decoupled_attention(q, k, v, 'csa', 0.125))
        t_slow = bench.measure(lambda: naive(q, k, v, 0.125))
        rows.append(dict(tokens=n, device=bench.machine['device_name'], sdpa_ms=1000 * t_fast.min,
                         naive_ms=1000 * t_slow.min, diff=float((fast - slow).abs().max()),
                         _state=harness.merge_states([t_fast.state, t_slow.state])))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['ViT-B-16', 'EVA02-B-16'])
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 448, 560])
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--mode', default='csa')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--compare-attention', action='store_true',
                        help='also time the decoupled attention: SDPA vs explicit softmax matrices')
    parser.add_argument('--profile', action='store_true', help='profile one more call of the roofline sizes')
    parser.add_argument('--roofline-sizes', nargs='+', type=int, default=[448],
                        help='sizes whose rows also go to the roofline table')
    parser.add_argument('--child', nargs=6, help=argparse.SUPPRESS)
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        name, size, batch, dtype, mode, repeats = args.child
        return measure(name, int(size), int(batch), dtype, mode, int(repeats), args.device, args.profile)

    bench = harness.Bench('backbone', args, args.device, title='Backbone: dense extraction')
    peaks = bench.measure_peaks(args.dtypes)
    for name in args.models:
        for size in args.sizes:
            for dtype in args.dtypes:
                cmd = [sys.executable, __file__, '--device', args.device, '--threads', str(torch.get_num_threads()),
                       '--child', name, str(size), str(args.batch), dtype, args.mode, str(args.repeats)]
                # timing with the normal allocator; memory in a second run whose large blocks come straight from
                # mmap, so freed memory leaves the RSS and its peak is the live peak (mmap slows it down)
                envs = [None] + ([dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')] if args.device == 'cpu' else [])
                profile = args.profile and size in args.roofline_sizes
                runs = [subprocess.run(cmd + (['--profile'] if profile and i == 0 else []), capture_output=True,
                                       text=True, env=env) for i, env in enumerate(envs)]   # each watches its load
                failed = [r for r in runs if r.returncode != 0]
                if failed:
                    print(f'{name} {size} {dtype}: failed\n{failed[0].stderr[-2000:]}', file=sys.stderr)
                    continue
                row, mem = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (runs[0], runs[-1]))
                row['peak_mb'] = mem['peak_mb']
                state = bench.judge(harness.state_from_dict(row.pop('state')))
                timing = harness.Timing(row.pop('times_s'), state)
                flops, summary = row.pop('flops'), row.pop('profile')
                seconds = timing.min / args.batch
                row.update(device=bench.machine['device_name'], gflop=flops / 1e9, gflops=flops / seconds / 1e9,
                           peak_share=flops / seconds / 1e9 / peaks[dtype] if peaks.get(dtype) else None)
                bench.add(row, state)
                model_label = f'{name} (paper size)' if name in ('EVA02-B-16', 'ViT-B-16') else name
                if size in args.roofline_sizes:
                    add_roofline(bench, 'backbone dense features', model_label, f'{size}x{size}, batch {args.batch}',
                                 dtype, 'image', timing, flops * args.batch, None, units_per_call=args.batch)
                if summary and size in args.roofline_sizes:
                    add_profile_summary(bench, f'backbone dense features {size}x{size}', model_label, dtype, summary,
                                        state)
    status = bench.finish(COLUMNS)
    if args.compare_attention:
        attention = compare_attention(bench)
        print(harness.render_table(ATTENTION_COLUMNS + [harness.STATE_COLUMN], [
            dict(r, state=r['_state'].label()) for r in attention]))
        if args.markdown and (args.allow_busy or not any(r['_state'].busy for r in attention)):
            harness.update_markdown(args.markdown, 'attention', ATTENTION_COLUMNS + [harness.STATE_COLUMN],
                                    [dict(r, state=r['_state'].label()) for r in attention], 'Decoupled attention')
        elif args.markdown:
            print('REFUSED: busy machine; the attention rows were not written', file=sys.stderr)
            status = harness.REFUSED_EXIT
    return status


if __name__ == '__main__':
    raise SystemExit(main())
