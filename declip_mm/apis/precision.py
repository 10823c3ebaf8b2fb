"""Inference precision: ``'auto'`` uses reduced precision only where the hardware runs it fast.

* CUDA: bf16 when the GPU supports it, else fp16;
* CPU: bf16 only with AMX (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``) in ``/proc/cpuinfo``'s flags, else fp32
  (on an AVX2-only CPU bf16 emulation is several times slower than fp32);
* anything else (MPS, ...): fp32.

An explicit ``'fp32'`` / ``'bf16'`` / ``'fp16'`` is used as given. Reduced precision runs the model under
``torch.autocast`` (weights stay fp32; matmuls and convolutions run in the reduced type); results are returned
as float32.
"""
import contextlib
from pathlib import Path
from typing import Optional

import torch

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FAST_BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def read_cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The 'flags' line of the first CPU in ``cpuinfo`` ('' when there is none, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ''
    for line in text.splitlines():
        if line.split(':', 1)[0].strip() in ('flags', 'Features'):
            return line.split(':', 1)[1] if ':' in line else ''
    return ''


def cpu_runs_bf16_fast(flags: str) -> bool:
    """True when a CPU flags string (``/proc/cpuinfo``) lists AMX-BF16 or AVX512-BF16."""
    present = set(flags.split())
    return any(flag in present for flag in FAST_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device, cpu_flags: Optional[str] = None) -> str:
    """'auto' | 'fp32' | 'bf16' | 'fp16' -> the precision to run on ``device`` (module doc).
    ``cpu_flags``: a /proc/cpuinfo flags string (None = read this machine's)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if precision != 'auto':
        return precision
    device = torch.device(device)
    if device.type == 'cuda':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    if device.type == 'cpu':
        return 'bf16' if cpu_runs_bf16_fast(read_cpu_flags() if cpu_flags is None else cpu_flags) else 'fp32'
    return 'fp32'


def autocast(precision: str, device):
    """A context manager that runs the model in ``precision`` (a resolved one) on ``device``."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


def check_device(device) -> torch.device:
    """``device`` as a torch.device, with a clear error when it is not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device '{device}' is not a device name (e.g. 'cpu', 'cuda', 'cuda:1')") from err
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}': CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
