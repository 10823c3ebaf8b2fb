"""``declip-mm export --onnx`` and ``--backend onnxruntime`` from the command line: the same results as the PyTorch
backend from the same weights files, and every misuse answered with one line and exit status 2."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.cli import main
from declip_mm.constants import TINY_MODELS


pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A full open_clip weights file of the tiny ViT preset: both towers (--backbone and --text-weights)."""
    import open_clip
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp('weights') / 'tiny_clip.pth'
    torch.save(open_clip.create_model(TINY_MODELS[0]).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def export_dir(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'onnx'
    assert main(['export', '--onnx', str(out), '--backbone', str(weights), '--text-weights', str(weights),
                 '--vocab', 'cat,dog; puppy']) == 0
    return out


@pytest.fixture(scope='module')
def photos(sample_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp('in')
    for p in sorted((Path(sample_root) / 'photos').glob('*.jpg'))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def test_export_folder(export_dir, weights):
    names = {p.name for p in export_dir.iterdir()}
    assert names == {'image_encoder.onnx', 'text_encoder.onnx', 'declip_onnx.json', 'vocabulary.json',
                     'vocabulary.npy', 'summary.json'}
    manifest = json.loads((export_dir / 'declip_onnx.json').read_text())
    assert manifest['mode'] == 'csa' and manifest['attn_scale'] == pytest.approx(0.25)   # segment's protocol
    assert manifest['random_weights'] is False and manifest['sources']['backbone'] == str(weights)
    assert manifest['vocabulary'] == dict(file='vocabulary.json', num_classes=2, num_queries=3)
    summary = json.loads((export_dir / 'summary.json').read_text())
    assert summary['command'] == 'export' and summary['counts']['processed'] == 1


def test_segment_with_onnxruntime_equals_pytorch(export_dir, weights, photos, tmp_path):
    common = ['segment', str(photos), '--vocab', 'cat,dog; puppy,sofa']
    assert main(common + ['--backbone', str(weights), '--text-weights', str(weights), '--precision', 'fp32',
                          '--out', str(tmp_path / 'pt')]) == 0
    assert main(common + ['--backbone', str(export_dir), '--backend', 'onnxruntime',
                          '--out', str(tmp_path / 'ox')]) == 0
    assert json.loads((tmp_path / 'ox/summary.json').read_text())['settings']['backend'] == 'onnxruntime'
    for labels in sorted((tmp_path / 'pt').glob('*_labels.png')):
        a, b = np.array(Image.open(labels)), np.array(Image.open(tmp_path / 'ox' / labels.name))
        assert (a == b).mean() > 0.999
        scores_pt = json.loads(labels.with_name(labels.name.replace('_labels.png', '.json')).read_text())
        scores_ox = json.loads((tmp_path / 'ox' / labels.name.replace('_labels.png', '.json')).read_text())
        assert scores_pt['scores'].keys() == scores_ox['scores'].keys()
        for name, score in scores_pt['scores'].items():
            assert scores_ox['scores'][name]['max_prob'] == pytest.approx(score['max_prob'], rel=1e-4)
            assert scores_ox['scores'][name]['area'] == pytest.approx(score['area'], abs=1e-3)


def test_features_with_onnxruntime_equal_pytorch(export_dir, weights, photos, tmp_path):
    assert main(['features', str(photos), '--backbone', str(weights), '--precision', 'fp32', '--raw',
                 '--out', str(tmp_path / 'pt')]) == 0
    assert main(['features', str(photos), '--backbone', str(export_dir), '--backend', 'onnxruntime', '--raw',
                 '--out', str(tmp_path / 'ox')]) == 0
    for f in sorted((tmp_path / 'pt').glob('*.npy')):
        a, b = np.load(f), np.load(tmp_path / 'ox' / f.name)
        assert a.shape == b.shape and np.abs(a - b).max() / np.abs(a).max() < 1e-4


def test_usage_errors(export_dir, weights, photos, tmp_path, capsys):
    random_export = tmp_path / 'random'
    assert main(['export', '--onnx', str(random_export), '--random-weights']) == 0
    assert json.loads((random_export / 'declip_onnx.json').read_text())['random_weights'] is True
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign/image_encoder.onnx').write_text('my own file')
    cases = [
        (['segment', str(photos), '--vocab', 'cat', '--backend', 'onnxruntime', '--out', str(tmp_path / 'o')],
         '--backend onnxruntime needs --backbone EXPORT_DIR'),
        (['segment', str(photos), '--vocab', 'cat', '--backend', 'onnxruntime', '--backbone', str(export_dir),
          '--text-weights', str(weights), '--out', str(tmp_path / 'o')], "runs the export folder's own text tower"),
        (['features', str(photos), '--backend', 'onnxruntime', '--backbone', str(weights), '--out',
          str(tmp_path / 'o')], 'not a folder'),
        (['features', str(photos), '--backend', 'onnxruntime', '--backbone', str(tmp_path), '--out',
          str(tmp_path / 'o')], 'no declip_onnx.json'),
        (['features', str(photos), '--backend', 'onnxruntime', '--backbone', str(random_export), '--out',
          str(tmp_path / 'o')], 'exported from towers without weights'),
        (['features', str(photos), '--backend', 'onnxruntime', '--backbone', str(export_dir), '--mode', 'qq',
          '--out', str(tmp_path / 'o')], "exported in mode 'csa'"),
        (['features', str(photos), '--backend', 'onnxruntime', '--backbone', str(export_dir), '--precision', 'bf16',
          '--out', str(tmp_path / 'o')], 'runs the exported float32 graphs'),
        (['export', '--onnx', str(tmp_path / 'foreign'), '--random-weights'], 'not written by declip-mm'),
        (['export', '--onnx', str(tmp_path / 'e'), '--random-weights', '--attn-scale', 'big'],
         "--attn-scale must be a number or '1/sqrt(d)'"),
        (['export', '--onnx', str(tmp_path / 'e'), '--random-weights', '--mode', 'xx'], '--mode must be one of'),
        (['export', '--onnx', str(tmp_path / 'e')], 'no --backbone or --text-weights given'),
        (['export', '--onnx', str(tmp_path / 'e'), '--backbone', str(tmp_path / 'missing.pth'), '--text-weights',
          str(weights)], 'missing.pth'),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err, (argv, err)
    assert (tmp_path / 'foreign/image_encoder.onnx').read_text() == 'my own file'
    assert not (tmp_path / 'o').exists()


def test_export_from_a_config(photos, tmp_path):
    """``export --config``: the config's towers and protocol mode; the same seed builds the same random towers, so
    ``segment --config`` and ``segment --backend onnxruntime`` on the export agree."""
    from test_apis import tiny_segmentation_config
    config = str(tiny_segmentation_config(tmp_path))
    torch.manual_seed(5)
    assert main(['export', '--onnx', str(tmp_path / 'onnx'), '--config', config]) == 0
    assert json.loads((tmp_path / 'onnx/declip_onnx.json').read_text())['sources']['config'] == config
    common = ['segment', str(photos), '--vocab', 'cat,dog,sofa']
    torch.manual_seed(5)
    assert main(common + ['--config', config, '--precision', 'fp32', '--out', str(tmp_path / 'pt')]) == 0
    assert main(common + ['--backbone', str(tmp_path / 'onnx'), '--backend', 'onnxruntime',
                          '--out', str(tmp_path / 'ox')]) == 0
    for labels in sorted((tmp_path / 'pt').glob('*_labels.png')):
        a, b = np.array(Image.open(labels)), np.array(Image.open(tmp_path / 'ox' / labels.name))
        assert (a == b).mean() > 0.999
