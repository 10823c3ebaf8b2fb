"""The one harness every ``tools/benchmark_*.py`` goes through.

It records the machine (CPU model and flags, cores, torch threads, GPU), watches the load while each measurement
runs, times a function (warm-up, then ``repeats`` calls; min and median), measures the matrix-product peak of the
device per precision in the same run, and writes rows as JSON and as markdown tables in ``docs/benchmarks.md``.

**Idle rule.** A measurement is *idle* when, with ``threads`` the torch threads it runs on and ``cores`` the
CPUs it may use (``sched_getaffinity``):

* the 1-minute load average read just before and just after it is at most ``threads + BUSY_LOAD_MARGIN`` (0.5).
  Our own process adds at most ``threads`` runnable threads, so anything above that is somebody else;
* other processes, plus the hypervisor's steal time, used at most ``BUSY_OTHERS_SHARE`` (10 %) of the CPU time
  of the ``cores`` during it: the machine's busy time from ``/proc/stat`` (psutil when installed, same source)
  minus this process's own CPU time and that of its finished children (``os.times()``).

Anything else is *busy*. Rows measured on a busy machine are printed and written to the JSON file, but
:meth:`Bench.finish` refuses to put them into a markdown file (exit status 3) unless ``--allow-busy`` is given;
then their ``state`` column says ``busy`` with the load and the others' share. Thresholds: ``--busy-load``,
``--busy-share``.

**Rows in markdown.** Each benchmark owns one table between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
in the markdown file (appended as a new section when the markers are missing). A new row replaces the row with the
same key columns (e.g. same device, model, size, precision, path), other rows stay, so CPU and GPU rows live side
by side. The matmul peaks go to the table ``peaks`` the same way.

**Peak.** ``matmul_peak``: an n x n x n product (CPU n = 2048, CUDA n = 8192), 2 n^3 FLOP, best and median of
several calls after two warm-ups, for fp32, bf16 and fp16 where the device runs it natively (CPU: oneDNN's bf16 /
fp16 support as torch reports it; CUDA: all three; fp32 on CUDA with TF32 off, torch's default).
"""
import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[2]
HARNESS_VERSION = 1
BUSY_LOAD_MARGIN = 0.5
BUSY_OTHERS_SHARE = 0.10
REFUSED_EXIT = 3
DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)


# ----------------------------------------------------------------------------------------------- the machine
def cpu_flags() -> Dict[str, bool]:
    text = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').is_file() else ''
    flags = set()
    for line in text.splitlines():
        if line.startswith('flags'):
            flags = set(line.split(':', 1)[1].split())
            break
    return {name: name in flags for name in ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16',
                                             'amx_fp16')}


def cpu_model() -> str:
    text = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').is_file() else ''
    return next((ln.split(':', 1)[1].strip() for ln in text.splitlines() if ln.startswith('model name')),
                platform.processor() or platform.machine())


def cpu_name(threads: Optional[int] = None) -> str:
    """'AMD EPYC (avx512_bf16), 2 threads': the model, its best bf16 feature and torch's threads."""
    flags = cpu_flags()
    best = next((f for f in ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2') if flags.get(f)), '')
    name = f'{cpu_model()} ({best})' if best else cpu_model()
    threads = torch.get_num_threads() if threads is None else threads
    return f'{name}, {threads} threads'


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit() -> Optional[float]:
    """CPUs the cgroup allows (cgroup v2 cpu.max), None for no limit."""
    try:
        quota, period = Path('/sys/fs/cgroup/cpu.max').read_text().split()
        return None if quota == 'max' else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def device_name(device: str) -> str:
    if device.startswith('cuda'):
        return torch.cuda.get_device_name()
    return cpu_name()


def machine_info(device: str = 'cpu') -> dict:
    info = dict(device=device, device_name=device_name(device), cpu_model=cpu_model(), cpu_flags=cpu_flags(),
                cores=usable_cores(), cpus_online=os.cpu_count(), cgroup_cpus=cgroup_cpu_limit(),
                torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads(),
                omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), python=platform.python_version(),
                hostname=platform.node())
    if device.startswith('cuda'):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                    gpu_capability=f'{props.major}.{props.minor}', cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


# ----------------------------------------------------------------------------------------------- the load
def _machine_cpu_seconds():
    """(busy seconds of all CPUs incl. steal, steal seconds, number of CPUs) since boot."""
    try:
        lines = Path('/proc/stat').read_text().splitlines()
        values = [int(v) for v in lines[0].split()[1:]]
        ncpu = sum(1 for ln in lines if re.match(r'cpu\d+ ', ln))
        user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
        hz = os.sysconf('SC_CLK_TCK')
        return (user + nice + system + irq + softirq + steal) / hz, steal / hz, ncpu
    except (OSError, IndexError, ValueError):
        try:
            import psutil
        except ImportError:
            return None
        t = psutil.cpu_times()
        busy = sum(getattr(t, f, 0.0) for f in ('user', 'nice', 'system', 'irq', 'softirq', 'steal'))
        return busy, getattr(t, 'steal', 0.0), psutil.cpu_count()


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _now() -> float:
    return time.perf_counter()


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class LoadState:
    """How loaded the machine was during one measurement (see the module doc's idle rule)."""
    threads: int
    cores: int
    wall_s: float = 0.0
    load_before: Optional[float] = None
    load_after: Optional[float] = None
    others_share: Optional[float] = None     # others' CPU time / (wall x CPUs in /proc/stat)
    steal_share: Optional[float] = None
    reasons: List[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.reasons)

    def judge(self, busy_load: float = BUSY_LOAD_MARGIN, busy_share: float = BUSY_OTHERS_SHARE) -> 'LoadState':
        self.reasons = []
        limit = self.threads + busy_load
        for name, value in (('before', self.load_before), ('after', self.load_after)):
            if value is not None and value > limit:
                self.reasons.append(f'load {name} {value:.2f} > {self.threads} threads + {busy_load}')
        if self.others_share is not None and self.others_share > busy_share:
            self.reasons.append(f'others used {100 * self.others_share:.0f} % of the CPUs > {100 * busy_share:.0f} %')
        return self

    def label(self) -> str:
        """'idle' or 'busy (load 5.8, others 61 %)': the state column of a row."""
        if not self.busy:
            return 'idle'
        loads = [v for v in (self.load_before, self.load_after) if v is not None]
        parts = [f'load {max(loads):.1f}'] if loads else []
        if self.others_share is not None:
            parts.append(f'others {100 * self.others_share:.0f} %')
        return f"busy ({', '.join(parts)})"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(busy=self.busy, label=self.label())
        return d


class LoadMonitor:
    """``with LoadMonitor(threads) as m: ...``; then ``m.state`` (a judged :class:`LoadState`)."""

    def __init__(self, threads: Optional[int] = None, busy_load: float = BUSY_LOAD_MARGIN,
                 busy_share: float = BUSY_OTHERS_SHARE):
        self.state = LoadState(threads=threads or torch.get_num_threads(), cores=usable_cores())
        self.busy_load, self.busy_share = busy_load, busy_share

    def __enter__(self):
        self.state.load_before = load_average()
        self._machine0, self._own0, self._t0 = _machine_cpu_seconds(), _own_cpu_seconds(), _now()
        return self

    def __exit__(self, *exc):
        wall = _now() - self._t0
        machine1, own1 = _machine_cpu_seconds(), _own_cpu_seconds()
        s = self.state
        s.wall_s, s.load_after = wall, load_average()
        if self._machine0 and machine1 and wall > 0:
            ncpu = machine1[2] or s.cores
            others = (machine1[0] - self._machine0[0]) - (own1 - self._own0)
            s.others_share = max(0.0, others) / (wall * ncpu)
            s.steal_share = (machine1[1] - self._machine0[1]) / (wall * ncpu)
        s.judge(self.busy_load, self.busy_share)
        return False


def merge_states(states: Sequence[LoadState]) -> LoadState:
    """One state for several measurements: the worst of each figure, all reasons."""
    states = [s for s in states if s is not None]
    out = LoadState(threads=states[0].threads, cores=states[0].cores, wall_s=sum(s.wall_s for s in states))
    for name in ('load_before', 'load_after', 'others_share', 'steal_share'):
        values = [getattr(s, name) for s in states if getattr(s, name) is not None]
        setattr(out, name, max(values) if values else None)
    out.reasons = [r for s in states for r in s.reasons]
    return out


def state_from_dict(d: dict) -> LoadState:
    return LoadState(**{k: d[k] for k in ('threads', 'cores', 'wall_s', 'load_before', 'load_after', 'others_share',
                                          'steal_share', 'reasons') if k in d})


# ----------------------------------------------------------------------------------------------- timing
def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)


@dataclass
class Timing:
    times: List[float]
    state: LoadState

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(self) -> dict:
        return dict(min_s=self.min, median_s=self.median, times_s=self.times, state=self.state.as_dict())


def measure(fn: Callable[[], object], repeats: int, device: str = 'cpu', warmup: int = 1,
            busy_load: float = BUSY_LOAD_MARGIN, busy_share: float = BUSY_OTHERS_SHARE) -> Timing:
    """``warmup`` untimed calls, then ``repeats`` timed calls of ``fn`` under a :class:`LoadMonitor`."""
    sync = synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    with LoadMonitor(busy_load=busy_load, busy_share=busy_share) as monitor:
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
    return Timing(times, monitor.state)


# ----------------------------------------------------------------------------------------------- memory
def proc_status_mb(field_name: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field_name} not in /proc/self/status')


def reset_cpu_peak() -> float:
    """Reset the process's peak RSS to its current RSS; return the current RSS in MB."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return proc_status_mb('VmRSS')


def memory_start(device: str) -> float:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2 ** 20
    return reset_cpu_peak()


def memory_peak(device: str, base: float) -> float:
    """Peak extra memory in MB since :func:`memory_start` returned ``base``."""
    if str(device).startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2 ** 20 - base
    return proc_status_mb('VmHWM') - base


# ----------------------------------------------------------------------------------------------- the peak
def supported_dtypes(device: str) -> List[str]:
    """Precisions whose matrix products the device runs natively (others would be emulated: not a peak)."""
    if str(device).startswith('cuda'):
        return ['fp32', 'bf16', 'fp16']
    out = ['fp32']
    for name, check in (('bf16', '_is_mkldnn_bf16_supported'), ('fp16', '_is_mkldnn_fp16_supported')):
        try:
            if getattr(torch.ops.mkldnn, check)():
                out.append(name)
        except (AttributeError, RuntimeError):
            pass
    return out


def matmul_peak(device: str = 'cpu', dtype: str = 'fp32', n: Optional[int] = None, repeats: int = 5,
                busy_load: float = BUSY_LOAD_MARGIN, busy_share: float = BUSY_OTHERS_SHARE) -> dict:
    """GFLOP/s of an n x n x n product in ``dtype`` (2 n^3 FLOP): best and median of ``repeats`` after 2 warm-ups."""
    n = n or (8192 if str(device).startswith('cuda') else 2048)
    g = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    timing = measure(lambda: torch.mm(a, b), repeats, device, warmup=2, busy_load=busy_load, busy_share=busy_share)
    flop = 2.0 * n ** 3
    return dict(dtype=dtype, n=n, gflops=flop / timing.min / 1e9, gflops_median=flop / timing.median / 1e9,
                state=timing.state)


# ----------------------------------------------------------------------------------------------- rows
@dataclass
class Column:
    header: str
    key: str
    fmt: Optional[Callable[[object], str]] = None
    is_key: bool = False    # rows with equal key columns replace each other in the markdown table

    def render(self, row: dict) -> str:
        value = row.get(self.key)
        if value is None:
            return '-'
        return self.fmt(value) if self.fmt else str(value)


def fmt_sig(digits: int = 3):
    """A number with ``digits`` significant digits (no exponent for ordinary sizes)."""
    def fmt(v):
        if not isinstance(v, (int, float)) or v == 0 or not math.isfinite(v):
            return str(v)
        return f'{v:.{max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))}f}'
    return fmt


def fmt_percent(v) -> str:
    """A share as a percentage: '83 %', '4.2 %', '0.31 %'."""
    return f'{fmt_sig(2)(100 * v) if 100 * v < 10 else f"{100 * v:.0f}"} %'


STATE_COLUMN = Column('state', 'state')


def add_arguments(parser: argparse.ArgumentParser, repeats: int = 3) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    g = parser.add_argument_group('harness (tools/benchmarks/harness.py)')
    g.add_argument('--repeats', type=int, default=repeats, help='timed repeats after the warm-up (min and median)')
    g.add_argument('--markdown', default=None, help='write the rows into this markdown file (docs/benchmarks.md)')
    g.add_argument('--json', default=None, help='write the rows, machine and load as JSON here (default: '
                   'work_dirs/benchmarks/<name>-<time>.json)')
    g.add_argument('--allow-busy', action='store_true', help='write rows measured on a busy machine into the '
                   'markdown file anyway, marked busy')
    g.add_argument('--busy-load', type=float, default=BUSY_LOAD_MARGIN,
                   help='busy when the 1-min load average exceeds the torch threads by more than this')
    g.add_argument('--busy-share', type=float, default=BUSY_OTHERS_SHARE,
                   help="busy when other processes take more than this share of the CPUs' time")
    g.add_argument('--no-peak', action='store_true', help='skip the matmul peak measurement')
    g.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own choice)')
    return parser


class Bench:
    """One benchmark run: collects rows with their load states, measures the peaks, writes JSON and markdown."""

    def __init__(self, name: str, args: argparse.Namespace, device: str, title: str = '', note: str = ''):
        if getattr(args, 'threads', None):
            torch.set_num_threads(args.threads)
        self.name, self.args, self.device, self.title, self.note = name, args, device, title, note
        self.started = datetime.now(timezone.utc).isoformat(timespec='seconds')
        self.machine = machine_info(device)
        self.rows: List[dict] = []
        self.peaks: List[dict] = []
        self.roofline: List[dict] = []      # tools/benchmarks/roofline.py add_roofline
        self.profiles: List[dict] = []      # tools/benchmarks/roofline.py add_profile

    # measurement helpers bound to this run's thresholds
    def measure(self, fn, repeats: Optional[int] = None, warmup: int = 1) -> Timing:
        return measure(fn, self.args.repeats if repeats is None else repeats, self.device, warmup,
                       self.args.busy_load, self.args.busy_share)

    def monitor(self) -> LoadMonitor:
        return LoadMonitor(busy_load=self.args.busy_load, busy_share=self.args.busy_share)

    def judge(self, state: LoadState) -> LoadState:
        return state.judge(self.args.busy_load, self.args.busy_share)

    def measure_peaks(self, dtypes: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Matmul GFLOP/s per precision on this device (fp32 always); {dtype: best GFLOP/s}."""
        if getattr(self.args, 'no_peak', False):
            return {}
        supported = supported_dtypes(self.device)
        for dtype in (dtypes or supported):
            if dtype not in supported:
                continue
            p = matmul_peak(self.device, dtype, busy_load=self.args.busy_load, busy_share=self.args.busy_share)
            self.peaks.append(dict(device=self.machine['device_name'], dtype=dtype, n=p['n'],
                                   gflops=round(p['gflops'], 1), gflops_median=round(p['gflops_median'], 1),
                                   torch=torch.__version__, state=p['state'].label(), _state=p['state']))
            print(json.dumps({k: v for k, v in self.peaks[-1].items() if k != '_state'}), flush=True)
        return self.peak_map()

    def peak_map(self) -> Dict[str, float]:
        return {p['dtype']: p['gflops'] for p in self.peaks}

    def add(self, row: dict, state: LoadState) -> dict:
        """Add a row measured under ``state``; prints it as a JSON line."""
        row = dict(row, state=state.label(), _state=state)
        self.rows.append(row)
        print(json.dumps(public(row), default=str), flush=True)
        return row

    def _all_rows(self) -> List[dict]:
        return self.rows + self.peaks + self.roofline + self.profiles

    @property
    def busy(self) -> bool:
        return any(r['_state'].busy for r in self._all_rows())

    def busy_reasons(self) -> List[str]:
        """A short summary: how many measurements were busy, the highest load and others' share among them."""
        busy = [r['_state'] for r in self._all_rows() if r['_state'].busy]
        if not busy:
            return []
        worst = merge_states(busy)
        loads = [v for v in (worst.load_before, worst.load_after) if v is not None]
        out = [f'{len(busy)} of {len(self._all_rows())} measurements busy']
        if loads:
            out.append(f'load average up to {max(loads):.2f} on {worst.threads} threads')
        if worst.others_share is not None:
            out.append(f'other processes up to {100 * worst.others_share:.0f} % of the CPUs')
        return out

    def to_json(self) -> dict:
        return dict(benchmark=self.name, harness_version=HARNESS_VERSION, started=self.started,
                    finished=datetime.now(timezone.utc).isoformat(timespec='seconds'), command=sys.argv,
                    git=git_commit(), machine=self.machine, busy=self.busy, busy_reasons=self.busy_reasons(),
                    peaks=[dict(public(p), load=p['_state'].as_dict()) for p in self.peaks],
                    rows=[dict(public(r), load=r['_state'].as_dict()) for r in self.rows],
                    roofline=[dict(public(r), load=r['_state'].as_dict()) for r in self.roofline],
                    profiles=[dict(public(r), load=r['_state'].as_dict()) for r in self.profiles])

    def finish(self, columns: Sequence[Column], heading: str = '') -> int:
        """Write the JSON file, and the markdown table unless the run was busy (then exit status 3 without
        ``--allow-busy``). Returns the exit status."""
        json_path = Path(self.args.json) if self.args.json else \
            REPO / 'work_dirs' / 'benchmarks' / f"{self.name}-{self.started.replace(':', '')}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_json(), indent=1, default=str) + '\n')
        print(f'rows: {json_path}')
        from .roofline import PROFILE_COLUMNS, ROOFLINE_COLUMNS
        columns = list(columns) + ([STATE_COLUMN] if STATE_COLUMN not in columns else [])
        tables = [(self.name, columns, self.rows, heading or self.title, self.note),
                  ('roofline', ROOFLINE_COLUMNS + [STATE_COLUMN], self.roofline, 'Roofline', ''),
                  ('profile', PROFILE_COLUMNS + [STATE_COLUMN], self.profiles, 'Profiles', ''),
                  ('peaks', PEAK_COLUMNS, self.peaks, 'Matrix-product peak', '')]
        for name, cols, rows, *_ in tables:
            if rows:
                print(f'\n{name}:\n{render_table(cols, rows)}')
        if not self.args.markdown:
            return 0
        if self.busy and not self.args.allow_busy:
            print(f'REFUSED: the machine was busy ({"; ".join(self.busy_reasons())}); {self.args.markdown} not '
                  'changed. Rerun on an idle machine, or pass --allow-busy to write the rows marked busy.',
                  file=sys.stderr)
            return REFUSED_EXIT
        for name, cols, rows, title, note in tables:
            if rows:
                update_markdown(self.args.markdown, name, cols, rows, title, note)
                print(f'{self.args.markdown}: table {name!r} updated')
        return 0


# the test + one training iteration columns of the F-ViT and CAT-Seg benchmarks (after their own key columns)
TEST_AND_TRAIN_COLUMNS = [
    Column('test ms / image (min)', 'test_ms_per_image', fmt_sig(3)),
    Column('test ms / image (median)', 'test_ms_median', fmt_sig(3)),
    Column('test GFLOP / image', 'test_gflop', fmt_sig(4)),
    Column('test % of peak', 'test_peak_share', fmt_percent),
    Column('test peak extra MB', 'test_peak_mb'), Column('train batch', 'train_batch', is_key=True),
    Column('train s / iteration (min)', 'train_s_per_iter', fmt_sig(3)),
    Column('train s / iteration (median)', 'train_s_median', fmt_sig(3)),
    Column('train GFLOP / iteration', 'train_gflop', fmt_sig(4)),
    Column('train % of peak', 'train_peak_share', fmt_percent), Column('train peak extra MB', 'train_peak_mb')]

PEAK_COLUMNS = [Column('device', 'device', is_key=True), Column('precision', 'dtype', is_key=True),
                Column('n', 'n'), Column('GFLOP/s (best)', 'gflops'), Column('GFLOP/s (median)', 'gflops_median'),
                Column('torch', 'torch', is_key=True), STATE_COLUMN]


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith('_')}


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------------------------- markdown
def render_row(columns: Sequence[Column], row: dict) -> str:
    return '| ' + ' | '.join(c.render(row) for c in columns) + ' |'


def render_table(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    lines = ['| ' + ' | '.join(c.header for c in columns) + ' |', '|' + '---|' * len(columns)]
    return '\n'.join(lines + [render_row(columns, r) for r in rows])


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip('|').split('|')]


def update_markdown(path, name: str, columns: Sequence[Column], rows: Sequence[dict], heading: str = '',
                    note: str = '') -> None:
    """Put ``rows`` into the table between ``<!-- bench:name -->`` and ``<!-- /bench:name -->`` of ``path``:
    existing rows with the same key columns are replaced, the others kept (dropped, with a message, when the
    table's header changed). Without the markers a new section is appended."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ''
    begin, end = f'<!-- bench:{name} -->', f'<!-- /bench:{name} -->'
    header = '| ' + ' | '.join(c.header for c in columns) + ' |'
    keys = [i for i, c in enumerate(columns) if c.is_key]
    new_lines = [render_row(columns, r) for r in rows]
    new_keys = {tuple(_cells(ln)[i] for i in keys) for ln in new_lines}
    kept = []
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        block, tail = rest.split(end, 1)
        old = [ln for ln in block.strip().splitlines() if ln.startswith('|')]
        if old and old[0].strip() == header:
            kept = [ln for ln in old[2:] if tuple(_cells(ln)[i] for i in keys) not in new_keys]
        elif old:
            print(f'{path}: table {name!r} has another header; its {len(old) - 2} old rows are dropped',
                  file=sys.stderr)
    else:
        title = f'\n## {heading or name}\n\n' + (f'{note}\n\n' if note else '')
        head, tail = text.rstrip('\n') + '\n' + title, '\n'
    table = '\n'.join([header, '|' + '---|' * len(columns)] + kept + new_lines)
    path.write_text(f'{head}{begin}\n{table}\n{end}{tail}')


@contextmanager
def profiled(enabled: bool, rows: int = 15, sort_by: str = 'self_cpu_time_total'):
    """``with profiled(True): ...`` prints torch.profiler's top ops by self CPU time after the block."""
    if not enabled:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        yield prof
    print(prof.key_averages().table(sort_by=sort_by, row_limit=rows))
