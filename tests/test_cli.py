"""The ``declip-mm`` command (in-process ``declip_mm.cli.main``) on tiny random towers and the
sample photos: outputs, corrupt inputs skipped and counted, vocabulary errors, videos, features, detection."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.apis import OpenVocabSegmenter
from declip_mm.cli import main
from test_apis import tiny_fvit_config
from test_inputs import write_video

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE


@pytest.fixture
def photos(sample_root, tmp_path):
    """A folder: 2 sample photos, a grayscale and an RGBA one; a corrupt JPEG, a text file named .png and an 80:1
    strip (sorted first, so the good ones come after them); a note that is not an input."""
    folder = tmp_path / 'in'
    folder.mkdir()
    src = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[:2]
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    rgb = np.array(Image.open(src[0]).convert('RGB'))
    Image.fromarray(rgb.mean(-1).astype(np.uint8)).save(folder / 'gray.png')
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(folder / 'rgba.png')
    data = src[1].read_bytes()
    (folder / '0_corrupt.jpg').write_bytes(data[:len(data) // 3])
    (folder / '0_text.png').write_text('hello')
    Image.fromarray(rgb[:5, :400]).save(folder / '1_strip.png')           # 80:1, above the 64:1 limit
    (folder / 'README.txt').write_text('not an image')
    return folder


def test_console_script_entry_point():
    import importlib
    import re
    spec = re.search(r"'declip-mm = ([\w.]+):(\w+)'", (REPO / 'setup.py').read_text())
    assert spec is not None and getattr(importlib.import_module(spec.group(1)), spec.group(2)) is main


def test_no_command_prints_the_help(capsys):
    assert main([]) == 2 and 'segment' in capsys.readouterr().out


def test_python_m_help():
    proc = subprocess.run([sys.executable, '-m', 'declip_mm', '--help'], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for command in ('segment', 'detect', 'features', 'serve'):
        assert command in proc.stdout


HEAVY = ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'open_clip', 'timm', 'diffusers')


def imported_heavy(importtime_stderr: str):
    """The heavy packages in a ``python -X importtime`` report (one 'import time: self | cumulative | name' line per
    imported module)."""
    names = {line.rsplit('|', 1)[-1].strip() for line in importtime_stderr.splitlines()
             if line.startswith('import time:')}
    return sorted(name for name in names if name.split('.')[0] in HEAVY)


@pytest.mark.parametrize('argv, code, message', [
    (['--help'], 0, ''),
    (['segment', '--help'], 0, ''),
    (['serve', '--help'], 0, ''),
    (['segment', 'no_such_folder', '--vocab', 'cat', '--out', 'o'], 2, 'no_such_folder: no such file or folder'),
    (['segment', '{photo}', '--vocab', 'cat', '--out', '{out}', '--bogus'], 2, 'unrecognized arguments: --bogus'),
    (['segment', '{photo}', '--vocab', 'cat', '--out', '{out}', '--window', '-1'], 2, '--window must be'),
    (['segment', '{photo}', '--vocab', 'bundled:nope', '--out', '{out}'], 2, "no bundled vocabulary 'nope'"),
    (['segment', '{photo}', '--vocab', 'cat,cat', '--out', '{out}'], 2, "'cat' is given twice"),
    (['segment', '{photo}', '--vocab', 'cat', '--out', '{out}', '--model-name', 'EVA02-B-16'], 2, 'random weights'),
])
def test_help_and_usage_errors_need_no_torch(argv, code, message, sample_root, tmp_path):
    """``python -m declip_mm`` parses and checks its arguments without importing torch or any OpenMMLab package
    (the checks that need no model answer in a fraction of a second), with the exit status and message as ever."""
    photo = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[0]
    argv = [a.format(photo=photo, out=tmp_path / 'o') for a in argv]
    proc = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'declip_mm', *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == code and message in proc.stderr, proc.stderr[-2000:]
    assert imported_heavy(proc.stderr) == []
    assert not (tmp_path / 'o').exists()


def test_console_script_help_needs_no_torch(tmp_path):
    """The console script (a file named declip-mm that calls ``declip_mm.cli:main``, as pip writes it): ``--help``
    imports no heavy package; the package itself, imported anywhere else, registers every module."""
    script = tmp_path / 'declip-mm'
    script.write_text('import atexit, sys\n'
                      'atexit.register(lambda: print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in '
                      f'{HEAVY!r}), file=sys.stderr))\n'
                      'from declip_mm.cli import main\n'
                      'sys.exit(main())\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script), '--help'], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and 'segment' in proc.stdout and 'LOADED []' in proc.stderr, proc.stderr[-2000:]
    code = ('import declip_mm, sys\n'
            'from mmengine.registry import MODELS\n'
            'print(sorted(n for n in ("DeCLIPViT", "TrainingFreeSegmentor", "FViT") if n in MODELS.module_dict))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "['DeCLIPViT', 'FViT', 'TrainingFreeSegmentor']" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_python_m_segment_registers_then_runs(sample_root, tmp_path):
    """Through the light path (``python -m declip_mm``), a command registers the package's modules before it builds
    the model, and runs as in-process: one photo segmented with random towers."""
    photo = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[0]
    out = tmp_path / 'o'
    proc = subprocess.run([sys.executable, '-m', 'declip_mm', 'segment', str(photo), '--vocab', 'cat,dog', '--out',
                           str(out), '--random-weights', '--device', 'cpu', '--quiet', '--precision', 'fp32'],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO), DECLIP_CACHE=str(tmp_path / 'cache')),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {f'{photo.stem}_overlay.png', f'{photo.stem}_labels.png',
                                               f'{photo.stem}.json', 'summary.json'}


def test_segment_writes_results_and_skips_bad_files(photos, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'mine.txt').write_text('kept')
    torch.manual_seed(0)
    code = main(['segment', str(photos), '--vocab', 'cat,dog,sofa; couch', '--background', 'background',
                 '--out', str(out), '--device', 'cpu', '--precision', 'fp32', '--quiet', '--random-weights'])
    err = capsys.readouterr().err
    assert code == 1                                                      # something was skipped
    assert '4 processed, 3 skipped' in err
    for name, reason in (('0_corrupt.jpg', 'cannot decode'), ('0_text.png', 'not an image'),
                         ('1_strip.png', 'image is 5 x 400 pixels, an aspect ratio of 80:1')):
        assert f'skipped {photos / name}: {reason}' in err
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts'] == dict(processed=4, skipped=3, processed_this_run=4, skipped_this_run=3)
    assert summary['settings']['random_weights'] is True
    assert {Path(s['source']).name for s in summary['skipped']} == {'0_corrupt.jpg', '0_text.png', '1_strip.png'}
    assert summary['settings']['background'] == 'background' and summary['settings']['bg_thresh'] == 0.2
    assert (out / 'mine.txt').read_text() == 'kept'
    names = sorted(e['name'] for e in summary['processed'])
    assert names == ['2011_000003', '2011_000006', 'gray', 'rgba']
    # the files of one image against the API on the same weights
    torch.manual_seed(0)
    seg = OpenVocabSegmenter('DeCLIP-Tiny-ViT-16', precision='fp32')
    res = seg(str(photos / '2011_000006.jpg'), 'cat,dog,sofa; couch', background='background')
    labels = np.array(Image.open(out / '2011_000006_labels.png'))
    assert labels.shape == res.labels.shape and (labels == res.labels).all()
    scores = json.loads((out / '2011_000006.json').read_text())
    assert scores['class_names'] == ['cat', 'dog', 'sofa', 'background'] and scores['background'] == 'background'
    assert scores['scores']['dog']['area'] == pytest.approx(res.areas()['dog'])
    overlay = Image.open(out / '2011_000006_overlay.png')
    assert overlay.size[0] == labels.shape[1] and overlay.size[1] > labels.shape[0]
    assert np.array(Image.open(out / 'gray_labels.png')).shape == np.array(Image.open(photos / 'gray.png')).shape

    # a second run into the same folder keeps the first run's files
    torch.manual_seed(0)
    assert main(['segment', str(photos / '2011_000003.jpg'), '--vocab', 'cat', '--out', str(out), '--quiet',
                 '--device', 'cpu', '--random-weights']) == 0
    assert (out / 'rgba_labels.png').is_file() and (out / 'gray.json').is_file()
    one = json.loads((out / '2011_000003.json').read_text())              # a one-word vocabulary
    assert one['class_names'] == ['cat'] and one['background'] is None
    assert (np.array(Image.open(out / '2011_000003_labels.png')) == 0).all()


@pytest.mark.parametrize('vocab, message', [
    ('', 'empty'), ('cat,dog,cat', "'cat' is given twice"), ('sofa; couch,couch', 'twice'),
    ('my_classes.txt', 'vocabulary file not found')])
def test_vocabulary_errors(vocab, message, photos, tmp_path, capsys):
    code = main(['segment', str(photos), '--vocab', vocab, '--out', str(tmp_path / 'o'), '--quiet',
                 '--random-weights'])
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'Traceback' not in err
    assert not (tmp_path / 'o').exists()                                  # checked before any work


def test_setup_errors(photos, tmp_path, capsys):
    cases = [
        (['segment', str(tmp_path / 'nope'), '--vocab', 'cat'], 'no such file or folder'),
        (['segment', str(photos), '--vocab', 'cat', '--model-name', 'EVA02-B-16'],
         'no --backbone or --text-weights given, so the model would run with random weights'),
        (['segment', str(photos), '--vocab', 'cat', '--device', 'cuda:7', '--random-weights'], 'cuda'),
        (['features', str(photos), '--model-name', 'ViT-B-16', '--backbone', str(tmp_path / 'no.pth')],
         'not found'),
        (['detect', str(photos), '--config', str(tmp_path / 'no.py'), '--vocab', 'cat', '--random-weights'],
         'config file not found'),
        (['segment', str(photos), '--vocab', 'cat', '--config', 'x.py', '--window', '224'], 'drop --window'),
        (['segment', str(photos), '--vocab', 'cat', '--fps', '0'], '--fps must be positive'),
        (['segment', str(photos), '--vocab', 'cat', '--bg-thresh', '0.3'], '--bg-thresh goes with --background'),
    ]
    for argv, message in cases:
        code = main(argv + ['--out', str(tmp_path / 'o'), '--quiet'])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)


def test_segment_a_video(tmp_path, capsys):
    video = write_video(tmp_path / 'clip.avi', frames=12, fps=4.0, size=(96, 64))
    torch.manual_seed(0)
    assert main(['segment', str(video), '--vocab', 'cat,dog', '--fps', '2', '--out', str(tmp_path / 'o'),
                 '--quiet', '--device', 'cpu', '--random-weights']) == 0
    summary = json.loads((tmp_path / 'o/summary.json').read_text())
    assert [(e['name'], e['frame']) for e in summary['processed']] == [('clip_f000000', 0), ('clip_f000002', 2),
                                                                       ('clip_f000004', 4), ('clip_f000006', 6),
                                                                       ('clip_f000008', 8), ('clip_f000010', 10)]
    assert np.array(Image.open(tmp_path / 'o/clip_f000004_labels.png')).shape == (64, 96)


def test_features(photos, tmp_path, sample_root):
    good = [str(photos / '2011_000003.jpg'), str(photos / 'gray.png')]
    masks = tmp_path / 'masks'
    masks.mkdir()
    ids = np.zeros(np.array(Image.open(photos / 'gray.png')).shape, np.uint8)
    ids[:100] = 3
    ids[200:] = 7
    Image.fromarray(ids).save(masks / 'gray.png')
    (tmp_path / 'boxes.json').write_text(json.dumps({'2011_000003.jpg': [[10, 20, 200, 300], [0, 0, 50, 50]]}))
    video = write_video(tmp_path / 'clip.avi', frames=8, fps=4.0, size=(96, 64))
    out = tmp_path / 'f'
    torch.manual_seed(0)
    code = main(['features', *good, str(video), '--out', str(out), '--long-side', '224', '--boxes',
                 str(tmp_path / 'boxes.json'), '--masks', str(masks), '--fps', '2', '--quiet', '--device', 'cpu',
                 '--precision', 'fp32', '--batch-size', '3', '--random-weights'])
    assert code == 0
    dense = np.load(out / '2011_000003.npy')
    assert dense.shape == (32, 10, 14) and np.allclose(np.linalg.norm(dense, axis=0), 1, atol=1e-5)
    assert np.load(out / '2011_000003_boxes.npy').shape == (2, 32)
    assert np.load(out / 'gray_masks.npy').shape == (2, 32)
    meta = json.loads((out / 'gray.json').read_text())
    assert meta['mask_ids'] == [3, 7] and meta['stride'] == 16
    frames = np.load(out / 'clip.npy')
    clip = json.loads((out / 'clip.json').read_text())
    assert frames.shape == (4, 32, 10, 14) and clip['frames'] == [0, 2, 4, 6]
    # against the API with the same weights, raw and as .pt
    from declip_mm.apis import DenseFeatureExtractor
    torch.manual_seed(0)
    fx = DenseFeatureExtractor('DeCLIP-Tiny-ViT-16', precision='fp32', long_side=224)
    ref = fx(photos / '2011_000003.jpg').normalized().numpy()
    assert np.allclose(dense, ref, atol=1e-5)
    torch.manual_seed(0)
    assert main(['features', good[0], '--out', str(out / 'pt'), '--long-side', '224', '--format', 'pt', '--raw',
                 '--quiet', '--device', 'cpu', '--precision', 'fp32', '--random-weights']) == 0
    raw = torch.load(out / 'pt/2011_000003.pt')
    assert torch.allclose(raw, fx(photos / '2011_000003.jpg').map, atol=1e-5)


def test_detect(photos, tmp_path):
    config = tiny_fvit_config(tmp_path)
    torch.manual_seed(0)
    code = main(['detect', str(photos), '--config', str(config), '--vocab', 'person,cat', '--random-weights',
                 '--score-thr', '0.0', '--out', str(tmp_path / 'd'), '--quiet', '--device', 'cpu'])
    assert code == 1                                                      # the three bad files
    summary = json.loads((tmp_path / 'd/summary.json').read_text())
    assert summary['counts']['processed'] == 4 and summary['counts']['skipped'] == 3
    dets = json.loads((tmp_path / 'd/2011_000003.json').read_text())
    assert dets['class_names'] == ['person', 'cat'] and len(dets['detections']) > 0
    assert all(d['label'] in ('person', 'cat') and len(d['box_xyxy']) == 4 for d in dets['detections'])
    width, height = Image.open(photos / '2011_000003.jpg').size           # + the red random-weights band
    assert Image.open(tmp_path / 'd/2011_000003_overlay.png').size == (width, height + 18)


def test_serve_hands_over_to_the_web_app(monkeypatch):
    seen = []
    fake = types.ModuleType('declip_mm.apis.web_app')
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, 'declip_mm.apis.web_app', fake)
    import declip_mm.apis
    monkeypatch.setattr(declip_mm.apis, 'web_app', fake, raising=False)
    assert main(['serve', '--port', '7861']) == 0 and seen == [['--port', '7861']]
