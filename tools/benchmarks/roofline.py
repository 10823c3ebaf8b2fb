"""Roofline and profile rows shared by the benchmark scripts (written through :mod:`tools.benchmarks.harness`).

A roofline row: one workflow's time per unit (image, iteration), its FLOPs (the formula of
:mod:`tools.benchmarks.flops` where one exists, and torch's count of the same run), achieved GFLOP/s and its share
of the matrix-product peak of the same precision measured in the same run (``Bench.measure_peaks``).

A profile row: torch.profiler over one more pass of the workflow, ops by self CPU time (self device time on CUDA;
on the CPU the wall time between torch ops, Python and data loading, counts as one more entry), the share of
matrix-class ops (products, convolutions, attention kernels) and the biggest other ops, which is where a workflow
far below the peak loses its time.
"""
import re
import time
from typing import Callable, List, Optional

import torch

from .harness import Bench, Column, fmt_percent, fmt_sig

ROOFLINE_COLUMNS = [
    Column('workflow', 'workflow', is_key=True), Column('model', 'model', is_key=True),
    Column('input', 'input', is_key=True), Column('device', 'device', is_key=True),
    Column('precision', 'dtype', is_key=True), Column('unit', 'unit'),
    Column('s / unit (min)', 'seconds', fmt_sig(3)), Column('s / unit (median)', 'seconds_median', fmt_sig(3)),
    Column('GFLOP / unit (formula)', 'gflop_formula', fmt_sig(4)),
    Column('GFLOP / unit (torch count)', 'gflop_counted', fmt_sig(4)),
    Column('GFLOP/s', 'gflops', fmt_sig(3)), Column('% of peak', 'peak_share', fmt_percent),
]
PROFILE_COLUMNS = [
    Column('workflow', 'workflow', is_key=True), Column('model', 'model', is_key=True),
    Column('device', 'device', is_key=True), Column('precision', 'dtype', is_key=True),
    Column('profiled s', 'seconds', fmt_sig(3)), Column('matrix ops', 'matmul_share', fmt_percent),
    Column('biggest other ops (share of self time)', 'others'),
]
OUTSIDE_OPS = '(outside torch ops: Python, data)'
MATRIX_OPS = re.compile(r'(^|::|_)(mm|addmm|bmm|baddbmm|matmul|linear|einsum|conv|convolution|mkldnn_convolution|'
                        r'_convolution|cudnn_convolution|scaled_dot_product|_native_multi_head_attention|'
                        r'_scaled_dot_product|flash_attention|efficient_attention|gemm|sgemm)', re.IGNORECASE)
WRAPPERS = {'aten::linear', 'aten::matmul', 'aten::einsum', 'aten::conv2d', 'aten::convolution', 'aten::_convolution',
            'aten::scaled_dot_product_attention'}


def is_matrix_op(name: str) -> bool:
    if name == OUTSIDE_OPS:
        return False
    return bool(MATRIX_OPS.search(name)) or 'gemm' in name.lower() or 'conv' in name.lower()


def add_roofline(bench: Bench, workflow: str, model: str, input_desc: str, dtype: str, unit: str, timing,
                 flops_formula: Optional[float], flops_counted: Optional[float], units_per_call: int = 1) -> dict:
    """One roofline row from a harness Timing of ``units_per_call`` units per call."""
    seconds, median = timing.min / units_per_call, timing.median / units_per_call
    flops = flops_counted if flops_counted else flops_formula
    peak = bench.peak_map().get(dtype)
    gflops = flops / seconds / 1e9 if flops else None
    row = dict(workflow=workflow, model=model, input=input_desc, device=bench.machine['device_name'], dtype=dtype,
               unit=unit, seconds=seconds, seconds_median=median,
               gflop_formula=flops_formula / 1e9 if flops_formula else None,
               gflop_counted=flops_counted / 1e9 if flops_counted else None, gflops=gflops,
               peak_gflops=peak, peak_share=gflops / peak if gflops and peak else None)
    bench.roofline.append(dict(row, state=timing.state.label(), _state=timing.state))
    return row


def profile_ops(fn: Callable[[], object], device: str = 'cpu', top: int = 12) -> dict:
    """Run ``fn`` once under torch.profiler: total self time, the matrix-class share and the top ops."""
    from torch.profiler import ProfilerActivity, profile
    cuda = str(device).startswith('cuda')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    attr = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    ops = [(e.key, getattr(e, attr, 0) / 1e6, e.count) for e in events if getattr(e, attr, 0) > 0]
    if not cuda and wall > sum(t for _, t, _ in ops):   # Python, data loading, anything between torch ops
        ops.append((OUTSIDE_OPS, wall - sum(t for _, t, _ in ops), 1))
    total = sum(t for _, t, _ in ops) or 1e-12
    ops.sort(key=lambda x: -x[1])
    matmul = sum(t for name, t, _ in ops if is_matrix_op(name))
    table = [dict(op=name, self_s=round(t, 4), share=round(t / total, 4), calls=n, matrix=is_matrix_op(name))
             for name, t, n in ops[:top]]
    others = [r for r in table if not r['matrix']]
    return dict(total_s=total, wall_s=wall, matmul_share=matmul / total, top=table,
                biggest_other=others[0] if others else None,
                by='self device time' if cuda else 'self CPU time')


def add_profile(bench: Bench, workflow: str, model: str, dtype: str, fn: Callable[[], object]) -> dict:
    """Profile one more call of ``fn`` and add a profile row (the load state of that pass)."""
    with bench.monitor() as monitor:
        summary = profile_ops(fn, bench.device)
    return add_profile_summary(bench, workflow, model, dtype, summary, monitor.state)


def add_profile_summary(bench: Bench, workflow: str, model: str, dtype: str, summary: dict, state) -> dict:
    """A profile row from :func:`profile_ops`' summary (e.g. made in a child process) and its load state."""
    row = dict(workflow=workflow, model=model, device=bench.machine['device_name'], dtype=dtype,
               seconds=summary['total_s'], matmul_share=summary['matmul_share'],
               others=top_others(summary['top']) or '-', top=summary['top'])
    bench.profiles.append(dict(row, state=state.label(), _state=state))
    print(f'profile {workflow} ({dtype}): matrix ops {100 * summary["matmul_share"]:.0f} % of {summary["by"]}')
    for r in summary['top']:
        print(f"  {r['op']:<55} {r['self_s']:9.3f} s {100 * r['share']:5.1f} % x{r['calls']}"
              f"{'' if r['matrix'] else '   <- not a matrix op'}")
    return row


def top_others(rows: List[dict], n: int = 4) -> str:
    return ', '.join(f"{r['op']} {100 * r['share']:.0f} %" for r in [r for r in rows if not r['matrix']][:n])
