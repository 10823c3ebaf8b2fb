"""The benchmark tooling (tools/benchmarks, tools/benchmark_*.py, tools/gpu): the idle rule and the refusal to write
busy rows, markdown rows replaced by key, min / median, the matmul peak, the FLOP formulas against torch's counter
(exact, on the tiny presets), the authors' loop against the tests' reference, and the GPU scripts (parsed, the
wheelhouse built, the CPU fallback run). ``test_gpu_*`` run only where CUDA is (tools/gpu/run.sh runs them)."""
import ast
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from tools.benchmarks import harness
from tools.benchmarks.flops import counted_flops, region_flops, training_free_flops, vit_flops

REPO = Path(__file__).resolve().parents[2]
TINY = ('DeCLIP-Tiny-ViT-16', 'DeCLIP-Tiny-EVA02-16')
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (tools/gpu/run.sh)')


def bench_args(tmp_path, **kw):
    return Namespace(**dict(dict(repeats=1, markdown=None, json=str(tmp_path / 'rows.json'), allow_busy=False,
                                 busy_load=harness.BUSY_LOAD_MARGIN, busy_share=harness.BUSY_OTHERS_SHARE,
                                 no_peak=True, threads=None), **kw))


# ----------------------------------------------------------------------------------------------- the idle rule
@pytest.mark.parametrize('load_before, load_after, others, busy', [
    (0.1, 2.0, 0.02, False),        # our own 2 threads raise the load to 2: still idle
    (0.1, 2.5, 0.10, False),        # on the thresholds
    (0.1, 2.6, 0.02, True),         # somebody else runnable
    (3.0, 2.0, 0.02, True),         # busy before we started
    (0.1, 2.0, 0.11, True),         # others took CPU time while we ran
])
def test_idle_rule(load_before, load_after, others, busy):
    state = harness.LoadState(threads=2, cores=2, load_before=load_before, load_after=load_after,
                              others_share=others).judge()
    assert state.busy is busy
    assert state.label().startswith('busy (load') if busy else state.label() == 'idle'


def test_load_monitor_subtracts_our_own_cpu_time(monkeypatch):
    """Others' share = (machine busy time - ours) / (wall x CPUs): 2 CPU-seconds on 2 CPUs in 1 s."""
    for own, expected, busy in ((iter([5.0, 6.9]), 0.05, False), (iter([5.0, 6.0]), 0.5, True)):
        clock = iter([10.0, 11.0])
        machine = iter([(100.0, 0.0, 2), (102.0, 0.0, 2)])
        monkeypatch.setattr(harness, '_now', lambda: next(clock))
        monkeypatch.setattr(harness, '_machine_cpu_seconds', lambda: next(machine))
        monkeypatch.setattr(harness, '_own_cpu_seconds', lambda own=own: next(own))
        monkeypatch.setattr(harness, 'load_average', lambda: 1.0)
        with harness.LoadMonitor(threads=2) as monitor:
            pass
        assert monitor.state.others_share == pytest.approx(expected)
        assert monitor.state.busy is busy


def test_load_monitor_reads_this_machine():
    with harness.LoadMonitor() as monitor:
        time.sleep(0.3)                                    # long against /proc/stat's 10 ms ticks
    state = monitor.state
    assert state.wall_s > 0 and state.load_before is not None and state.load_after is not None
    assert state.others_share is not None and 0 <= state.others_share <= 1.5


def test_measure_gives_min_and_median():
    delays = iter([0.0, 0.05, 0.01, 0.03])                  # warm-up, then three timed calls
    timing = harness.measure(lambda: time.sleep(next(delays)), repeats=3)
    assert len(timing.times) == 3
    assert timing.min == min(timing.times) and 0.009 < timing.min < 0.03
    assert timing.median == sorted(timing.times)[1] and timing.median >= 0.029


def test_matmul_peak_per_precision():
    assert harness.supported_dtypes('cpu')[0] == 'fp32'
    peak = harness.matmul_peak('cpu', 'fp32', n=128, repeats=2)
    assert peak['gflops'] >= peak['gflops_median'] > 0 and peak['state'].wall_s > 0


# ----------------------------------------------------------------------------------------------- rows
COLUMNS = [harness.Column('device', 'device', is_key=True), harness.Column('size', 'size', is_key=True),
           harness.Column('ms', 'ms', harness.fmt_sig(3)), harness.STATE_COLUMN]


def test_markdown_rows_are_replaced_by_key(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\ntext before\n')
    harness.update_markdown(doc, 'demo', COLUMNS, [dict(device='cpu', size=224, ms=12.345, state='idle'),
                                                   dict(device='gpu', size=224, ms=1.0, state='idle')], 'Demo')
    text = doc.read_text()
    assert text.startswith('# Benchmarks\n\ntext before\n') and '## Demo' in text
    assert '| cpu | 224 | 12.3 | idle |' in text
    harness.update_markdown(doc, 'demo', COLUMNS, [dict(device='cpu', size=224, ms=10.0, state='idle'),
                                                   dict(device='cpu', size=448, ms=40.0, state='idle')])
    rows = [ln for ln in doc.read_text().splitlines() if ln.startswith('| ') and 'device' not in ln]
    assert rows == ['| gpu | 224 | 1.00 | idle |', '| cpu | 224 | 10.0 | idle |', '| cpu | 448 | 40.0 | idle |']
    assert doc.read_text().count('<!-- bench:demo -->') == 1 and doc.read_text().count('## Demo') == 1


def busy_state():
    return harness.LoadState(threads=2, cores=2, load_before=5.8, load_after=6.1, others_share=0.6).judge()


@pytest.mark.parametrize('allow_busy', [False, True])
def test_busy_rows_are_refused_unless_allowed(tmp_path, allow_busy):
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n')
    bench = harness.Bench('demo', bench_args(tmp_path, markdown=str(doc), allow_busy=allow_busy), 'cpu')
    bench.add(dict(device='cpu', size=224, ms=12.0), busy_state())
    bench.add(dict(device='cpu', size=448, ms=40.0), harness.LoadState(threads=2, cores=2, load_before=0.1,
                                                                       load_after=2.0, others_share=0.01).judge())
    status = bench.finish(COLUMNS)
    saved = json.loads((tmp_path / 'rows.json').read_text())
    assert saved['busy'] is True and len(saved['rows']) == 2 and saved['machine']['torch_threads'] >= 1
    assert saved['rows'][0]['load']['busy'] and saved['rows'][0]['state'].startswith('busy (load 6.1, others 60 %)')
    if allow_busy:
        assert status == 0 and '| cpu | 224 | 12.0 | busy (load 6.1, others 60 %) |' in doc.read_text()
        assert '| cpu | 448 | 40.0 | idle |' in doc.read_text()
    else:
        assert status == harness.REFUSED_EXIT and doc.read_text() == '# Benchmarks\n'


def test_every_benchmark_script_goes_through_the_harness():
    scripts = sorted((REPO / 'tools').glob('benchmark_*.py'))
    assert len(scripts) >= 6
    for path in scripts:
        imported = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert 'tools.benchmarks' in imported or 'tools.benchmarks.harness' in imported, path.name
        assert 'harness.add_arguments(parser' in path.read_text(), path.name


# ----------------------------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('mode', ['csa', 'qq', 'kk', 'vanilla', 'maskclip'])
def test_vit_formula_equals_torch_counter(name, mode):
    from declip_mm.models import DeCLIPViT
    model = DeCLIPViT(name, trainable='none').eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        counted, _ = counted_flops(model.extract_dense, x, mode=mode)
    assert counted == vit_flops(model, 64, 96, mode, batch=2)


def test_vit_formula_on_the_paper_model():
    """EVA02-B/16 (random weights): 79.6 GFLOP per 336 px window, 152 at 448 (docs/benchmarks.md)."""
    from declip_mm.models import DeCLIPViT
    model = DeCLIPViT('EVA02-B-16', trainable='none')
    assert vit_flops(model, 336, 336, 'csa') == 79_580_098_560
    assert round(vit_flops(model, 448, 448, 'csa') / 1e9, 1) == 152.1


@pytest.fixture(scope='module')
def tiny_segmentor():
    from tools.benchmark_inference import build
    return build('configs/segmentation/training-free_declip-eva02-b16_voc21.py', 'DeCLIP-Tiny-EVA02-16', 'cpu')[1]


def test_protocol_formulas_equal_torch_counter(tiny_segmentor):
    from tools.benchmark_inference import authors_run, ours_run
    from mmseg.structures import SegDataSample
    model = tiny_segmentor
    x = torch.randn(1, 3, 448, 597)
    samples = [SegDataSample(metainfo=dict(ori_shape=(375, 500), img_shape=(448, 597)))]
    want = training_free_flops(model, 448, 597)
    with torch.no_grad():
        for run in (authors_run(model), ours_run(model, 1), ours_run(model, None)):
            assert counted_flops(run, x, samples)[0] == want


def test_onnxruntime_path_equals_the_pytorch_path(tiny_segmentor, tmp_path):
    """The benchmark's onnxruntime row times the same protocol: equal labels, probabilities within 1e-4."""
    from tools.benchmark_inference import onnx_run, ours_run
    from mmseg.structures import SegDataSample
    model = tiny_segmentor
    x = torch.randn(1, 3, 448, 597)
    samples = [SegDataSample(metainfo=dict(ori_shape=(375, 500), img_shape=(448, 597)))]
    with torch.no_grad():
        labels, probs = ours_run(model, None)(x, samples)
        ort_labels, ort_probs = onnx_run(model, tmp_path / 'onnx')(x, samples)
    assert type(model.backbone).__name__ == 'DeCLIPViT'          # put back after the run
    assert (labels == ort_labels).double().mean() > 0.999 and (probs - ort_probs).abs().max() < 1e-4


def test_region_formula_equals_torch_counter():
    from mmengine.structures import BaseDataElement
    from tools.benchmark_features import build_region_classifier
    _, model = build_region_classifier('DeCLIP-Tiny-ViT-16', 'cpu')
    sample = BaseDataElement(metainfo=dict(img_shape=(200, 150)))
    sample.gt_bboxes = torch.tensor([[0., 0., 50., 60.], [10., 20., 140., 190.], [5., 5., 30., 30.]])
    with torch.no_grad():
        counted, _ = counted_flops(model, torch.randn(1, 3, 200, 150), [sample])
    assert counted == region_flops(model, 200, 150, 3)


def test_authors_loop_equals_the_tests_reference(tiny_segmentor):
    """tools/benchmarks/authors_loop.py is the slide path of tests/reference/declip_segmentation_ref.py."""
    from reference.declip_segmentation_ref import reference_segment
    from tools.benchmarks.authors_loop import authors_segment
    model = tiny_segmentor
    x = torch.randn(1, 3, 300, 470)
    kw = dict(logit_scale=model.logit_scale, prob_thd=0.1, crop_size=336, stride=112, patch_size=16,
              ori_shape=(250, 390))

    def dense_fn(window):
        return model.backbone.extract_dense(window, mode=model.mode, normalize=False)
    ours = authors_segment(x, dense_fn, model.text_embeddings, model.text_class_index.tolist(), **kw)
    ref = reference_segment(x, dense_fn, model.text_embeddings, model.text_class_index.tolist(), **kw)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


# ----------------------------------------------------------------------------------------------- scripts
@pytest.mark.slow
def test_benchmark_script_refuses_busy_rows_end_to_end(tmp_path):
    """tools/benchmark_inference.py on the tiny preset with a threshold no machine meets: rows in the JSON (the
    formula equal to the count), the markdown file untouched, exit status 3."""
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n')
    proc = subprocess.run([sys.executable, 'tools/benchmark_inference.py', '--model-name', 'DeCLIP-Tiny-EVA02-16',
                           '--images', '1', '--repeats', '1', '--dtypes', 'fp32', '--paths', 'authors', 'batched',
                           '--busy-load', '-100', '--markdown', str(doc), '--json', str(tmp_path / 'rows.json')],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == harness.REFUSED_EXIT, proc.stderr[-2000:]
    assert 'REFUSED' in proc.stderr and doc.read_text() == '# Benchmarks\n'
    saved = json.loads((tmp_path / 'rows.json').read_text())
    assert [r['labels_equal'] for r in saved['rows']] == [100.0, 100.0]
    assert all(r['state'].startswith('busy') for r in saved['rows'] + saved['peaks'])
    for r in saved['roofline']:
        assert r['gflop_formula'] == pytest.approx(r['gflop_counted'], rel=1e-12)


def test_gpu_and_run_all_scripts_parse():
    for script in ('tools/gpu/prepare.sh', 'tools/gpu/run.sh', 'tools/benchmarks/run_all.sh'):
        subprocess.run(['bash', '-n', script], cwd=REPO, check=True)


def test_run_all_lists_every_benchmark_script():
    out = subprocess.run(['bash', 'tools/benchmarks/run_all.sh', '--dry-run'], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for path in (REPO / 'tools').glob('benchmark_*.py'):
        assert f'tools/{path.name}' in out, path.name
    assert '--markdown docs/benchmarks.md' in out and '--allow-busy' not in out


@pytest.mark.slow
def test_prepare_builds_the_wheelhouse(tmp_path):
    """tools/gpu/prepare.sh: one version of each package, a pure mmcv wheel and its source, well under 64 MiB."""
    out = tmp_path / 'whl'
    proc = subprocess.run(['bash', 'tools/gpu/prepare.sh', str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0 and any(s in proc.stderr for s in ('Could not fetch', 'NewConnectionError',
                                                               'Temporary failure in name resolution',
                                                               'No matching distribution')):
        pytest.skip(f'no package index reachable: {proc.stderr.strip().splitlines()[-1]}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    names = [f.split('-')[0].lower().replace('_', '-') for f in files]
    assert len(names) == len(set(names)), files                  # one version of each (pip --target needs it)
    for want in ('mmengine-', 'mmdet-', 'mmsegmentation-', 'open_clip_torch-', 'timm-', 'mmcv_lite-',
                 'mmcv-2.1.0.tar.gz', 'pycocotools-', 'shapely-'):
        assert any(f.startswith(want) for f in files), want
    assert all('cp312' in f or 'none-any' in f or 'abi3' in f or f.endswith('.tar.gz') for f in files)
    assert sum(p.stat().st_size for p in out.iterdir()) < 40 * 2 ** 20


@pytest.mark.slow
def test_gpu_run_script_cpu_fallback(tmp_path):
    """tools/gpu/run.sh where there is no GPU (nor wheels): the tiny CPU case writes every output file."""
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), WHEELS=str(tmp_path / 'no-wheels'), PYTHON=sys.executable)
    proc = subprocess.run(['bash', 'tools/gpu/run.sh', '--quick', '--skip-tests'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert {'log.txt', 'env.txt', 'benchmarks.md', 'rows.json', 'summary.txt'} <= {p.name for p in out.iterdir()}
    runs = json.loads((out / 'rows.json').read_text())
    assert {r['benchmark'] for r in runs} == {'backbone', 'inference', 'features'}
    assert all(r['rows'] for r in runs)
    assert '<!-- bench:inference -->' in (out / 'benchmarks.md').read_text()


# ----------------------------------------------------------------------------------------------- GPU only
@cuda
@pytest.mark.parametrize('name', TINY)
def test_gpu_vit_formula_equals_torch_counter(name):
    """On CUDA, SDPA runs torch's flash / efficient kernels, which torch's registry counts itself."""
    from declip_mm.models import DeCLIPViT
    model = DeCLIPViT(name, trainable='none').eval().cuda()
    with torch.no_grad():
        counted, _ = counted_flops(model.extract_dense, torch.randn(2, 3, 64, 96, device='cuda'))
    assert counted == vit_flops(model, 64, 96, batch=2)


@cuda
@pytest.mark.parametrize('dtype', [None, torch.bfloat16, torch.float16])
def test_gpu_batched_windows_match_the_authors_loop(dtype):
    """EVA02-B/16 (random weights) on the sample photos: the batched path labels like the authors' loop."""
    from tools.benchmark_inference import authors_run, build, ours_run, sample_inputs
    cfg, model = build('configs/segmentation/training-free_declip-eva02-b16_voc21.py', None, 'cuda')
    x, samples = sample_inputs(cfg, model, 1)[0]
    with torch.no_grad(), torch.autocast('cuda', dtype=dtype or torch.float32, enabled=dtype is not None):
        labels, probs = ours_run(model, None)(x.cuda(), samples)
        ref_labels, ref_probs = authors_run(model)(x.cuda(), samples)
    agree = float((labels == ref_labels).double().mean())
    assert agree >= (0.9999 if dtype is None else 0.99), agree        # random weights: near-tied classes
    assert float((probs.float() - ref_probs.float()).abs().max()) < (1e-4 if dtype is None else 2e-2)
