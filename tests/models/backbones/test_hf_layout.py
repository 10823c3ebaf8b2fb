"""open_clip's Hugging Face folder layout (issue 20 item 3): export, load back, hf-hub: from the local cache, offline.

A tiny DeCLIPViT is exported with tools/converters/declip_to_open_clip.py --hf-dir into the files open_clip's
push_to_hf_hub writes (open_clip_config.json by open_clip's own save_config_for_hf, open_clip_model.safetensors,
README.md) plus our 'declip' entry; it loads back through DeCLIPViT with every tensor, the mode, scale and input size
and the dense features equal, through the text side (create_clip) with the text tower given at export, and in plain
open_clip ('local-dir:', create_model_and_transforms, in a process that never imports declip_mm). 'hf-hub:org/name'
resolves from a fake Hugging Face cache laid out as huggingface_hub lays it out (blobs, refs/main, snapshots/<rev>
with links), with sockets refused; a miss is one line naming the repository and the cache folder, and exit 2 on the
command line.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from declip_mm.models import DeCLIPViT, create_clip
from declip_mm.models.backbones.checkpoints import (HF_CONFIG_FILE, OPEN_CLIP_HF, read_checkpoint, save_hf_dir,
                                                    stored_settings)
from declip_mm.models.clip_factory import resolve_pretrained

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / 'tools' / 'converters'))
TINY_EVA, TINY_VIT = 'DeCLIP-Tiny-EVA02-16', 'DeCLIP-Tiny-ViT-16'
REV = '0123456789abcdef0123456789abcdef01234567'


def perturbed(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def export_tiny(tmp_path, name=TINY_EVA, mode='kk', seed=1):
    """A perturbed tiny DeCLIPViT saved in our format, its text weights file, and the converter's --hf-dir folder."""
    import declip_to_open_clip
    backbone = perturbed(DeCLIPViT(name, mode=mode, attn_scale=1.0, input_size=96), seed)
    src = tmp_path / 'declip.pth'
    backbone.save_checkpoint(str(src))
    text = perturbed(create_clip(name)[0], seed + 10)
    text_file = tmp_path / 'clip_text.bin'
    torch.save(text.state_dict(), text_file)
    folder = tmp_path / 'hf'
    declip_to_open_clip.main([str(src), '--hf-dir', str(folder), '--text-weights', str(text_file)])
    return backbone, text, folder


def test_export_writes_open_clips_layout_and_loads_back_exactly(tmp_path):
    backbone, text, folder = export_tiny(tmp_path)
    assert sorted(os.listdir(folder)) == ['README.md', HF_CONFIG_FILE, 'open_clip_model.safetensors']
    config = json.loads((folder / HF_CONFIG_FILE).read_text())
    assert set(config) == {'model_cfg', 'preprocess_cfg', 'declip'}
    assert config['model_cfg'] == open_clip.get_model_config(TINY_EVA)
    assert config['preprocess_cfg'] == {'mean': list(open_clip.OPENAI_DATASET_MEAN),
                                        'std': list(open_clip.OPENAI_DATASET_STD),
                                        'interpolation': 'bicubic', 'resize_mode': 'shortest'}
    assert {k: config['declip'][k] for k in ('model_name', 'mode', 'attn_scale', 'input_size')} == \
        {'model_name': TINY_EVA, 'mode': 'kk', 'attn_scale': 1.0, 'input_size': 96}
    assert 'library_name: open_clip' in (folder / 'README.md').read_text()
    weights = load_file(str(folder / 'open_clip_model.safetensors'))
    assert set(weights) == set(create_clip(TINY_EVA)[0].state_dict())

    found = read_checkpoint(folder)                                   # the one module detects it
    assert found.format == OPEN_CLIP_HF and found.meta == config['declip'] and found.config == config
    assert read_checkpoint(folder / 'open_clip_model.safetensors').format == OPEN_CLIP_HF
    assert stored_settings(str(folder))['mode'] == 'kk'
    assert stored_settings(resolve_pretrained(TINY_EVA, str(folder)))['attn_scale'] == 1.0

    loaded = DeCLIPViT(TINY_EVA, pretrained=str(folder))              # mode and scale from the folder
    assert (loaded.mode, loaded.attn_scale, loaded.input_size) == ('kk', 1.0, 96)
    mine = loaded.state_dict()
    assert set(mine) == set(backbone.state_dict())
    assert all(torch.equal(mine[k], v) for k, v in backbone.state_dict().items())
    images = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.extract_dense(images), backbone.extract_dense(images))
    with pytest.raises(ValueError, match='trained with mode'):
        DeCLIPViT(TINY_EVA, pretrained=str(folder), mode='qq')

    clip, report = create_clip(TINY_EVA, str(folder))                 # the text side: the text weights given
    assert report.missing == [] and report.unexpected == []
    assert all(torch.equal(clip.state_dict()[k], v) for k, v in text.state_dict().items()
               if not k.startswith('visual.'))


def test_save_hf_dir_matches_open_clips_own_save_for_hf(tmp_path):
    """Our writer and open_clip's save_for_hf give the same config (but our 'declip' entry) and the same tensors."""
    from open_clip.push_to_hf_hub import save_for_hf
    clip = perturbed(create_clip(TINY_VIT)[0], 3)
    save_hf_dir(clip, tmp_path / 'ours', TINY_VIT, {'mode': 'csa'}, readme=False)
    tokenizer = type('NoTokenizerFiles', (), {'save_pretrained': lambda self, d: None})()
    save_for_hf(clip, tokenizer, open_clip.get_model_config(TINY_VIT), tmp_path / 'theirs', safe_serialization=True)
    assert sorted(os.listdir(tmp_path / 'ours')) == sorted(os.listdir(tmp_path / 'theirs'))
    ours = json.loads((tmp_path / 'ours' / HF_CONFIG_FILE).read_text())
    assert ours.pop('declip') == {'mode': 'csa'}
    assert ours == json.loads((tmp_path / 'theirs' / HF_CONFIG_FILE).read_text())
    a, b = (load_file(str(tmp_path / d / 'open_clip_model.safetensors')) for d in ('ours', 'theirs'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plain_open_clip_loads_the_folder(tmp_path):
    """The raw CLIP, for users of open_clip alone: in a process that never imports declip_mm."""
    backbone, _, folder = export_tiny(tmp_path, TINY_VIT, mode='qq', seed=4)
    script = f"""
import sys, torch, open_clip
from safetensors.torch import load_file
model, _, preprocess = open_clip.create_model_and_transforms('local-dir:{folder}')
saved = load_file('{folder}/open_clip_model.safetensors')
assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
model = open_clip.create_model('local-dir:{folder}', pretrained=None)
assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
assert 'declip_mm' not in sys.modules
print('mean', list(preprocess.transforms[-1].mean))
"""
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, PYTHONPATH=''))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'mean {list(open_clip.OPENAI_DATASET_MEAN)}' in out.stdout


def fake_hf_cache(hub: Path, repo: str, folder: Path):
    """``folder`` as huggingface_hub caches a download: blobs/<hash>, refs/main = <rev>, snapshots/<rev>/<file> ->
    ../../blobs/<hash> (relative links)."""
    import hashlib
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / 'blobs').mkdir(parents=True)
    (root / 'refs').mkdir()
    (root / 'refs' / 'main').write_text(REV)
    snapshot = root / 'snapshots' / REV
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (root / 'blobs' / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path('..') / '..' / 'blobs' / blob)
    return root


@pytest.fixture
def offline_hf_home(tmp_path, monkeypatch):
    """A tmp HF_HOME, HF_HUB_OFFLINE=1, and no socket may connect (a network call would fail the test)."""
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'XDG_CACHE_HOME'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

    def refuse(*args, **kwargs):
        raise AssertionError('a network connection was attempted')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    return tmp_path / 'hf_home' / 'hub'


def test_hf_hub_name_resolves_from_the_local_cache(tmp_path, offline_hf_home, monkeypatch):
    backbone, _, folder = export_tiny(tmp_path, seed=5)
    fake_hf_cache(offline_hf_home, 'someorg/declip-tiny', folder)
    path = resolve_pretrained(TINY_EVA, 'hf-hub:someorg/declip-tiny')
    assert path == str(offline_hf_home / 'models--someorg--declip-tiny' / 'snapshots' / REV /
                       'open_clip_model.safetensors')
    loaded = DeCLIPViT(TINY_EVA, pretrained='hf-hub:someorg/declip-tiny')
    assert (loaded.mode, loaded.attn_scale, loaded.input_size) == ('kk', 1.0, 96)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in backbone.state_dict().items())
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'elsewhere'))
    with pytest.raises(FileNotFoundError, match='elsewhere'):
        resolve_pretrained(TINY_EVA, 'hf-hub:someorg/declip-tiny')


def test_an_offline_miss_is_one_clear_line(tmp_path, offline_hf_home, capsys):
    with pytest.raises(FileNotFoundError) as err:
        resolve_pretrained(TINY_EVA, 'hf-hub:someorg/absent')
    message = str(err.value)
    assert '\n' not in message and "'someorg/absent'" in message
    assert str(offline_hf_home / 'models--someorg--absent') in message and 'nothing is downloaded' in message
    # config there, weights not: named too
    backbone, _, folder = export_tiny(tmp_path, TINY_VIT, mode='qq', seed=6)
    (folder / 'open_clip_model.safetensors').unlink()
    fake_hf_cache(offline_hf_home, 'someorg/partial', folder)
    with pytest.raises(FileNotFoundError, match='lacks open_clip_model.safetensors'):
        resolve_pretrained(TINY_VIT, 'hf-hub:someorg/partial')

    from declip_mm.cli import main
    image = tmp_path / 'img.png'
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(image)
    code = main(['features', str(image), '--model-name', TINY_VIT, '--backbone', 'hf-hub:someorg/absent',
                 '--out', str(tmp_path / 'o'), '--quiet', '--device', 'cpu'])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "'someorg/absent'" in lines[0], lines


def test_the_command_takes_a_folder(tmp_path):
    from declip_mm.cli import main
    _, _, folder = export_tiny(tmp_path, TINY_VIT, mode='qq', seed=7)
    image = tmp_path / 'img.png'
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(image)
    out = tmp_path / 'o'
    assert main(['features', str(image), '--model-name', TINY_VIT, '--backbone', str(folder), '--out', str(out),
                 '--quiet', '--device', 'cpu', '--precision', 'fp32', '--long-side', '64']) == 0
    assert json.loads((out / 'summary.json').read_text())['settings']['mode'] == 'qq'
    assert main(['features', str(image), '--model-name', TINY_VIT, '--backbone', str(tmp_path), '--out',
                 str(tmp_path / 'o2'), '--quiet', '--device', 'cpu']) == 2          # a folder without weights
    # serve checks its weights before building: a folder with open_clip weights and an hf-hub: name pass that check
    from types import SimpleNamespace

    from declip_mm.apis.web_app import missing_weights_file
    assert missing_weights_file(SimpleNamespace(backbone=str(folder), text_weights='hf-hub:org/name')) is None
    assert 'folder without open_clip weights' in missing_weights_file(SimpleNamespace(backbone=str(tmp_path),
                                                                                     text_weights=None))
