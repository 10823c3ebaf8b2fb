"""Hostile and careless input: checkpoints that would run code, output folders holding a user's files, random weights
that look like results, nonsense numbers, broken files in every weights slot, and tools/train.py / tools/test.py
usage errors. Each case failed (ran the payload, overwrote, printed a traceback or scored random weights) before."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.cli import main
from declip_mm.utils import CheckpointError, UntrustedCheckpointError, load_checkpoint
from test_cli import photos  # noqa: F401  (fixture)
from test_foundation import TOY_CONFIG, TOY_TASK

pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE
REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture
def evil(tmp_path):
    """(a checkpoint whose unpickling writes a marker file, the marker's path)."""
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={'visual.proj': torch.zeros(2)}, meta=dict(note=_Payload(marker))), path)
    return path, marker


def test_a_checkpoint_that_runs_code_is_refused_and_names_the_opt_in(evil):
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and 'system' in message and '--trust-checkpoint' in message
    assert not marker.exists()
    # mmengine's loader for local paths (Runner.load_checkpoint, --resume, load_from) is the same safe one
    from mmengine.runner.checkpoint import CheckpointLoader
    with pytest.raises(UntrustedCheckpointError):
        CheckpointLoader.load_checkpoint(str(path))
    assert not marker.exists()
    # the explicit opt-in does run it: the payload is real
    load_checkpoint(path, trust=True)
    assert marker.exists()


def test_an_mmengine_checkpoint_loads_safely_with_its_own_types(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('test_hardening')
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('iter', 3)
    path = tmp_path / 'iter_3.pth'
    torch.save(dict(state_dict={'w': torch.ones(2)}, message_hub=hub.state_dict(),
                    meta=dict(hist=np.arange(3), seed=np.int64(5), lr=np.float64(0.1), dtype=np.dtype('float32'),
                              config='x = 1'), optimizer=dict(state={}, param_groups=[dict(lr=0.1, params=[0])])),
               path)
    loaded = load_checkpoint(path)
    assert loaded['meta']['hist'].tolist() == [0, 1, 2] and loaded['meta']['seed'] == 5
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty'), (b'hello, not weights\n', 'is not a PyTorch checkpoint'), ('truncate', 'truncated or corrupt')])
def test_files_that_are_not_checkpoints_say_so(tmp_path, content, message):
    path = tmp_path / 'w.pth'
    if content == 'truncate':
        torch.save({'w': torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:1500])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_cli_never_runs_a_checkpoint_payload(evil, photos, tmp_path, capsys):  # noqa: F811
    path, marker = evil
    code = main(['segment', str(photos / '2011_000003.jpg'), '--vocab', 'cat', '--backbone', str(path),
                 '--random-weights', '--out', str(tmp_path / 'o'), '--quiet', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert code == 2 and 'not allowed in a checkpoint' in err and 'Traceback' not in err
    assert not marker.exists()


@pytest.mark.parametrize('content, message', [(b'', 'is empty'), (b'a text file\n', 'is not a PyTorch checkpoint')])
def test_cli_broken_weights_files_are_one_line(photos, tmp_path, capsys, content, message):  # noqa: F811
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(content)
    code = main(['features', str(photos / 'gray.png'), '--backbone', str(bad), '--out', str(tmp_path / 'o'), '--quiet'])
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'Traceback' not in err and not (tmp_path / 'o').exists()


def _tool(tool, args, cwd):
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{cwd}')
    return subprocess.run([sys.executable, str(REPO / 'tools' / tool), *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.mark.slow
def test_tools_refuse_payloads_partial_checkpoints_and_missing_files(evil, tmp_path):
    path, marker = evil
    (tmp_path / 'toy_task.py').write_text(TOY_TASK)
    (tmp_path / 'toy_cfg.py').write_text(TOY_CONFIG)
    proc = _tool('test.py', ['toy_cfg.py', str(path), '--work-dir', 'w'], tmp_path)
    assert proc.returncode == 2 and 'not allowed in a checkpoint' in proc.stderr, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr and not marker.exists()
    # another model's whole-model checkpoint: nothing is scored, the missing weights are listed
    torch.save(dict(state_dict={'other.weight': torch.ones(1, 3)}, meta=dict(epoch=1)), tmp_path / 'other.pth')
    proc = _tool('test.py', ['toy_cfg.py', 'other.pth', '--work-dir', 'w'], tmp_path)
    assert proc.returncode == 2 and 'linear.weight' in proc.stderr and 'mse' not in proc.stdout, proc.stderr[-2000:]
    for args, message in ((['missing_cfg.py', 'other.pth'], 'config file not found'),
                          (['toy_cfg.py', 'missing.pth'], 'checkpoint file not found')):
        proc = _tool('test.py', args, tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    (tmp_path / 'empty.pth').write_bytes(b'')
    proc = _tool('train.py', ['toy_cfg.py', '--resume', 'empty.pth', '--work-dir', 'w'], tmp_path)
    assert proc.returncode == 2 and 'is empty' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr


def test_a_misspelt_runner_key_is_warned_about():
    from mmengine.config import Config

    from declip_mm.engine.runner_setup import warn_unknown_keys
    cfg = Config(dict(param_schedulr=[dict(type='LinearLR')], train_pipeline=[], data_root='x', model=dict()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert warn_unknown_keys(cfg) == ['param_schedulr']
    assert "did you mean 'param_scheduler'" in str(caught[0].message)


def test_check_complete_checkpoint_lists_the_missing_weights(tmp_path):
    from declip_mm.engine.runner_setup import UsageError, check_complete_checkpoint
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    torch.save(dict(state_dict={'module.0.weight': torch.ones(2, 2), '0.bias': torch.ones(2)}), tmp_path / 'c.pth')
    with pytest.raises(UsageError, match=r"leaves 2 of the model's weights.*'1.bias', '1.weight'"):
        check_complete_checkpoint(model, str(tmp_path / 'c.pth'))
    with pytest.warns(UserWarning, match='leaves 2'):
        check_complete_checkpoint(model, str(tmp_path / 'c.pth'), allow_partial=True)


# ---------------------------------------------------------------------- output folders
def _segment(inputs, out, *extra):
    torch.manual_seed(0)
    return main(['segment', *map(str, inputs), '--vocab', 'cat,dog', '--out', str(out), '--quiet', '--device', 'cpu',
                 '--precision', 'fp32', '--random-weights', *extra])


def test_out_inside_the_inputs_never_overwrites_a_users_file(sample_root, tmp_path, capsys):
    folder = tmp_path / 'pets'
    folder.mkdir()
    src = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[0]
    (folder / 'dog.jpg').write_bytes(src.read_bytes())
    users = np.full((20, 30), 7, np.uint8)
    Image.fromarray(users).save(folder / 'dog_labels.png')            # the user's own annotation
    code = _segment([folder], folder)
    err = capsys.readouterr().err
    assert code == 2 and 'dog_labels.png' in err and 'not written by declip-mm' in err
    assert (np.array(Image.open(folder / 'dog_labels.png')) == users).all()
    assert not (folder / 'summary.json').exists()                     # refused before any model was built
    # --overwrite is the explicit way to allow it
    assert _segment([folder / 'dog.jpg'], folder, '--overwrite') == 0
    assert np.array(Image.open(folder / 'dog_labels.png')).shape != users.shape


def test_a_second_run_skips_its_own_outputs_and_merges_the_summary(sample_root, tmp_path):
    folder = tmp_path / 'pics'
    folder.mkdir()
    srcs = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[:2]
    (folder / 'a.jpg').write_bytes(srcs[0].read_bytes())
    assert _segment([folder], folder) == 0
    first = json.loads((folder / 'summary.json').read_text())
    assert [e['name'] for e in first['processed']] == ['a']
    (folder / 'b.jpg').write_bytes(srcs[1].read_bytes())
    assert _segment([folder], folder) == 0                            # a_overlay.png etc. are not inputs
    second = json.loads((folder / 'summary.json').read_text())
    assert sorted(e['name'] for e in second['processed']) == ['a', 'b']
    assert second['counts']['processed_this_run'] == 2 and second['counts']['processed'] == 2
    # --skip-existing resumes: nothing left to do, nothing rewritten
    before = (folder / 'a_labels.png').stat().st_mtime_ns
    assert _segment([folder], folder, '--skip-existing') == 0
    third = json.loads((folder / 'summary.json').read_text())
    assert third['counts']['processed_this_run'] == 0 and len(third['processed']) == 2
    assert (folder / 'a_labels.png').stat().st_mtime_ns == before


def test_summary_keeps_entries_of_earlier_runs_in_another_folder(sample_root, tmp_path):
    srcs = sorted((sample_root / 'voc/JPEGImages').glob('*.jpg'))[:2]
    out = tmp_path / 'out'
    assert _segment([srcs[0]], out) == 0 and _segment([srcs[1]], out) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert {Path(e['source']).name for e in summary['processed']} == {srcs[0].name, srcs[1].name}


@pytest.mark.parametrize('where, message', [('file', 'is a file'), ('under', 'which is a file')])
def test_out_that_is_or_lies_under_a_file(photos, tmp_path, capsys, where, message):  # noqa: F811
    (tmp_path / 'f').write_text('x')
    out = tmp_path / 'f' if where == 'file' else tmp_path / 'f' / 'sub'
    assert _segment([photos / 'gray.png'], out) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and (tmp_path / 'f').read_text() == 'x'


def test_interrupt_keeps_what_was_done(photos, tmp_path, capsys, monkeypatch):  # noqa: F811
    from declip_mm.apis.segmenter import OpenVocabSegmenter
    real = OpenVocabSegmenter.__call__
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)
    monkeypatch.setattr(OpenVocabSegmenter, '__call__', interrupted)
    out = tmp_path / 'o'
    assert _segment([photos / '2011_000003.jpg', photos / '2011_000006.jpg'], out) == 130
    err = capsys.readouterr().err
    assert 'interrupted' in err and 'Traceback' not in err
    summary = json.loads((out / 'summary.json').read_text())
    assert [e['name'] for e in summary['processed']] == ['2011_000003']


# ---------------------------------------------------------------------- random weights and nonsense numbers
def test_random_weights_must_be_asked_for_and_are_marked(photos, tmp_path, capsys):  # noqa: F811
    image = photos / '2011_000003.jpg'
    code = main(['segment', str(image), '--vocab', 'cat', '--out', str(tmp_path / 'a'), '--quiet'])
    err = capsys.readouterr().err
    assert code == 2 and '--random-weights' in err and not (tmp_path / 'a').exists()
    assert _segment([image], tmp_path / 'b') == 0
    err = capsys.readouterr().err
    assert 'RANDOM WEIGHTS' in err
    summary = json.loads((tmp_path / 'b/summary.json').read_text())
    assert summary['settings']['random_weights'] is True
    assert json.loads((tmp_path / 'b/2011_000003.json').read_text())['random_weights'] is True
    overlay = np.array(Image.open(tmp_path / 'b/2011_000003_overlay.png'))
    labels = np.array(Image.open(tmp_path / 'b/2011_000003_labels.png'))
    assert overlay.shape[0] > labels.shape[0] + 18
    band = overlay[:18].reshape(-1, 3)
    assert ((band == (200, 0, 0)).all(-1).mean()) > 0.8                 # the red band on top


@pytest.mark.parametrize('flag, value, message', [
    ('--short-side', '0', '--short-side must be a positive'), ('--bg-thresh', '2', '--bg-thresh must be a probability'),
    ('--logit-scale', '-1', '--logit-scale must be a positive'), ('--stride', '0', '--stride must be a positive'),
    ('--window', '-5', '--window must be 0'), ('--max-output-pixels', '-5', '--max-output-pixels must be 0'),
    ('--mode', 'bogus', "--mode must be one of")])
def test_nonsense_numbers_are_refused_before_any_work(photos, tmp_path, capsys, flag, value, message):  # noqa: F811
    out = tmp_path / 'o'
    code = main(['segment', str(photos / 'gray.png'), '--vocab', 'cat', '--background', 'background', flag, value,
                 '--out', str(out), '--quiet', '--random-weights'])
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'Traceback' not in err and not out.exists()


def test_the_catseg_converter_reads_safely(evil, tmp_path):
    from tools.converters.catseg_d2_to_declip import convert
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError):
        convert(str(path), str(tmp_path / 'out.pth'), 'configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py')
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_a_distillation_checkpoint_as_backbone_says_what_to_use(photos, tmp_path, capsys):  # noqa: F811
    torch.save(dict(state_dict={'student.visual.trunk.pos_embed': torch.ones(2)}, meta=dict(epoch=1, hist=np.arange(2))),
               tmp_path / 'epoch_1.pth')
    code = main(['features', str(photos / 'gray.png'), '--backbone', str(tmp_path / 'epoch_1.pth'), '--out',
                 str(tmp_path / 'o'), '--quiet'])
    err = capsys.readouterr().err
    assert code == 2 and 'is a distillation checkpoint' in err and 'declip_backbone_final.pth' in err
    assert 'Traceback' not in err and "error: '" not in err
