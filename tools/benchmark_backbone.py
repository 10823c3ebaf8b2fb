"""Speed and peak memory of DeCLIPViT dense extraction, per model, input size and precision.

    python tools/benchmark_backbone.py [--models EVA02-B-16 ViT-B-16] [--sizes 224 448 560] [--batch 1]
        [--dtypes fp32 bf16] [--mode csa] [--repeats 3] [--markdown docs/benchmarks.md]

Weights are random (the architecture, not the values, sets the cost). Each configuration runs in a fresh
subprocess. Memory is the peak extra memory of extraction over the loaded model (the activations' peak):
on CUDA from torch.cuda.max_memory_allocated; on CPU from the process's peak resident set size (Linux VmHWM,
reset through /proc/self/clear_refs, in a second run that allocates large blocks with mmap so freed memory
leaves the RSS). bf16 rows run under torch.autocast and report
the mean cosine similarity of their dense features to the fp32 ones.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch


def proc_status_mb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def reset_cpu_peak():
    """Reset the process's peak RSS to its current RSS; return the current RSS in MB."""
    import ctypes
    import gc
    gc.collect()
    ctypes.CDLL('libc.so.6').malloc_trim(0)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return proc_status_mb('VmRSS')


def measure(model_name, size, batch, dtype, mode, repeats, device):
    """Run in a child process: one configuration; prints a JSON line."""
    import declip_mm  # noqa: F401
    from declip_mm.models import DeCLIPViT
    torch.manual_seed(0)
    model = DeCLIPViT(model_name, mode=mode, trainable='none').eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    with torch.no_grad():
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base_mb = torch.cuda.memory_allocated() / 2 ** 20
        else:
            base_mb = reset_cpu_peak()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == 'bf16'):
            out = model.extract_dense(x)  # warm-up
            sync()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                out = model.extract_dense(x)
                sync()
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else proc_status_mb('VmHWM')
        peak_mb = peak - base_mb
        reference = model.extract_dense(x) if dtype == 'bf16' else None
    row = dict(model=model_name, size=size, batch=batch, dtype=dtype, mode=mode, device=device,
               ms_per_image=1000 * min(times) / batch, peak_mb=peak_mb, tokens=(size // model.patch_size) ** 2)
    if reference is not None:
        row['cosine_to_fp32'] = float(torch.nn.functional.cosine_similarity(out.float(), reference, dim=1).mean())
    print(json.dumps(row))


def compare_attention(tokens_list=(197, 1226, 2305, 4097), heads=12, head_dim=64, repeats=3):
    """The decoupled 'csa' attention for one image: SDPA vs explicit softmax matrices (fp32, this device)."""
    from declip_mm.models.backbones.decoupled_attention import decoupled_attention

    def naive(q, k, v, s):
        return (torch.softmax(s * q @ q.transpose(-1, -2), -1) + torch.softmax(s * k @ k.transpose(-1, -2), -1)) @ v

    lines = ['\n### Decoupled csa attention (one image, 12 heads x 64, fp32): SDPA vs explicit matrices\n',
             '| tokens | SDPA ms | explicit ms | max abs difference |', '|---|---|---|---|']
    for n in tokens_list:
        q, k, v = (torch.randn(1, heads, n, head_dim) for _ in range(3))
        timings = {}
        for name, fn in (('sdpa', lambda: decoupled_attention(q, k, v, 'csa', 0.125)),
                         ('naive', lambda: naive(q, k, v, 0.125))):
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                out = fn()
            timings[name] = (1000 * (time.perf_counter() - start) / repeats, out)
        diff = (timings['sdpa'][1] - timings['naive'][1]).abs().max().item()
        lines.append(f"| {n} | {timings['sdpa'][0]:.1f} | {timings['naive'][0]:.1f} | {diff:.1e} |")
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['ViT-B-16', 'EVA02-B-16'])
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 448, 560])
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=['fp32', 'bf16'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--mode', default='csa')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--markdown', help='append the result table to this file')
    parser.add_argument('--compare-attention', action='store_true',
                        help='also time the decoupled attention: SDPA vs explicit softmax matrices')
    parser.add_argument('--child', nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, size, batch, dtype, mode, repeats = args.child
        return measure(name, int(size), int(batch), dtype, mode, int(repeats), args.device)

    rows = []
    for name in args.models:
        for size in args.sizes:
            for dtype in args.dtypes:
                cmd = [sys.executable, __file__, '--device', args.device, '--child', name, str(size), str(args.batch),
                       dtype, args.mode, str(args.repeats)]
                # timing with the normal allocator; memory in a second run whose large blocks come straight from
                # mmap, so freed memory leaves the RSS and its peak is the live peak (mmap slows it down)
                runs = [subprocess.run(cmd, capture_output=True, text=True, env=env) for env in
                        (None, dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536'))]
                failed = [r for r in runs if r.returncode != 0]
                if failed:
                    print(f'{name} {size} {dtype}: failed\n{failed[0].stderr[-2000:]}', file=sys.stderr)
                    continue
                row, mem = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
                if args.device == 'cpu':
                    row['peak_mb'] = mem['peak_mb']
                rows.append(row)
                print(json.dumps(row), flush=True)

    device = torch.cuda.get_device_name() if args.device == 'cuda' else f'CPU ({platform.processor() or "x86_64"}, ' \
        f'{torch.get_num_threads()} threads)'
    lines = [f'\n### DeCLIPViT dense extraction, mode {args.mode}, batch {args.batch}, {device}, torch '
             f'{torch.__version__}\n', '| model | input | tokens | precision | ms / image | peak extra memory (MB) | '
             'cosine to fp32 |', '|---|---|---|---|---|---|---|']
    for r in rows:
        cos = f"{r['cosine_to_fp32']:.5f}" if 'cosine_to_fp32' in r else '-'
        lines.append(f"| {r['model']} | {r['size']} | {r['tokens']} | {r['dtype']} | {r['ms_per_image']:.0f} | "
                     f"{r['peak_mb']:.0f} | {cos} |")
    table = '\n'.join(lines) + '\n'
    if args.compare_attention:
        table += compare_attention()
    print(table)
    if args.markdown:
        with open(args.markdown, 'a') as f:
            f.write(table)


if __name__ == '__main__':
    main()
