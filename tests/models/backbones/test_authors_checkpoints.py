"""The authors' DeCLIP ``.pt`` and the official EVA02-CLIP checkpoint, as the REFERENCE code lays them out.

The layouts (key, shape, dtype, parameter/buffer, in ``state_dict()`` order) and the wrapper the authors' training
script saves were recorded by running the reference model code (tests/fixtures/reference/declip_authors_pt_b16.json,
declip_authors_pt_l14.json: xiaomoguhz/DeCLIP@2c0b3de; eva02_clip_b16.json: baaivision/EVA@5623d08; the
``provenance`` field of each says how; ``declip_authors_generate_fixtures.py`` regenerates them). Here checkpoints
are written from those records (random tensors of the recorded shapes, in the recorded wrapper) and loaded where
users put them: ``tools/test.py CONFIG FILE`` (``attach_checkpoint``), ``DeCLIPViT(pretrained=FILE)`` (what the
``declip-mm --backbone`` command, the Python API, configs and the converter build) and the text encoder
(``--text-weights``). Nothing may be missing or unexpected except the rotary tables the fixtures list as
recomputed, and every loaded tensor must be one of the file's, bit for bit.
"""
import json
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from declip_mm.models import DeCLIPViT
from declip_mm.models.backbones.checkpoints import (convert_eva_clip_state_dict, is_eva_clip_state_dict,
                                                    unwrap_state_dict)

pytestmark = pytest.mark.reference

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / 'tests' / 'fixtures' / 'reference'
REGION_CONFIG = REPO / 'configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py'
LAYOUTS = {'declip_b16': 'declip_authors_pt_b16.json', 'declip_l14': 'declip_authors_pt_l14.json',
           'eva02_b16': 'eva02_clip_b16.json'}


def layout(which):
    return json.loads((FIXTURES / LAYOUTS[which]).read_text())


def recomputed(record):
    """The file's keys that the fixture documents as recomputed (the rotary tables)."""
    patterns = [re.compile('^' + re.escape(p).replace(r'\.N\.', r'\.\d+\.') + '$')
                for p in record['recomputed']['patterns']]
    return sorted(k for k, *_ in record['state_dict'] if any(p.match(k) for p in patterns))


def random_state_dict(record, dtype=None, seed=0, device=None):
    """Random tensors by the recorded shapes (dtype: the recorded one unless given), in the recorded order."""
    g = torch.Generator().manual_seed(seed)
    if device == 'meta':
        return {k: torch.empty(shape, dtype=dtype or getattr(torch, dt), device='meta')
                for k, shape, dt, _ in record['state_dict']}
    return {k: torch.randn(shape, generator=g).to(dtype or getattr(torch, dt)) for k, shape, dt, _ in record['state_dict']}


def authors_training_checkpoint(record, state_dict):
    """What DeCLIP's src/training/main.py (lines 294-316) saves: {epoch, name, state_dict, optimizer[, scaler]}
    with the student's state dict unprefixed; a real AdamW state (two groups, one step) and GradScaler state."""
    params = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{'params': [params[1]], 'weight_decay': 0.}, {'params': [params[0]], 'weight_decay': 0.1}],
                            lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
    sum(p.sum() for p in params).backward()
    opt.step()
    checkpoint = {'epoch': 6, 'name': 'declip_eva_b16_dinov2', 'state_dict': state_dict,
                  'optimizer': opt.state_dict(), 'scaler': torch.amp.GradScaler('cpu').state_dict()}
    assert set(checkpoint) == set(record['checkpoint']['top_level'])
    return checkpoint


def fingerprint(t):
    flat = t.detach().double().flatten()
    return tuple(t.shape), flat.sum().item(), tuple(flat[:4].tolist())


def sources(loaded: dict, file_tensors: dict) -> dict:
    """{loaded key: the file key whose tensor it equals exactly}; fails for a loaded tensor that is in no file
    entry, or for two loaded tensors taken from the same file entry."""
    by_print = {}
    for k, v in file_tensors.items():
        by_print.setdefault(fingerprint(v), []).append(k)
    found = {}
    for key, value in loaded.items():
        matches = [k for k in by_print.get(fingerprint(value), []) if torch.equal(file_tensors[k].to(value.dtype), value)]
        assert len(matches) == 1, f'{key}: equals {len(matches)} tensors of the file ({matches[:3]})'
        found[key] = matches[0]
    used = sorted(found.values())
    assert len(used) == len(set(used)), 'two loaded tensors come from the same file entry'
    return found


# ------------------------------------------------------------------ the recorded layouts themselves
def test_recorded_layouts_have_provenance_and_agree():
    declip, declip_l, eva = layout('declip_b16'), layout('declip_l14'), layout('eva02_b16')
    assert declip['provenance']['repository'] == 'xiaomoguhz/DeCLIP'
    assert declip['provenance']['commit'].startswith('2c0b3de')
    assert eva['provenance']['repository'] == 'baaivision/EVA' and eva['provenance']['commit'].startswith('5623d08')
    for record in (declip, declip_l, eva):
        assert 'create_model(' in record['provenance']['how'] and record['provenance']['model_code']
        assert all(kind in ('parameter', 'buffer') for *_, kind in record['state_dict'])
        # the only buffers saved are the rotary tables, documented as recomputed; everything else is a parameter
        buffers = sorted(k for k, *_, kind in record['state_dict'] if kind == 'buffer')
        assert buffers == recomputed(record) and buffers
        assert 'text.attn_mask' in record['non_persistent_buffers']
    # DeCLIP fine-tunes EVA-CLIP without adding modules: the same keys, shapes and kinds as BAAI's model
    strip = lambda rec: [(k, s, kind) for k, s, _, kind in rec['state_dict']]  # noqa: E731
    assert strip(declip) == strip(eva)
    assert {k for k, *_ in declip['state_dict']} >= {'visual.blocks.11.attn.rope.freqs_cos', 'visual.rope.freqs_sin'}
    assert len([k for k, *_ in declip_l['state_dict'] if k.endswith('attn.q_proj.weight')]) == 24
    assert declip['checkpoint']['prefix'].startswith('none')


@pytest.mark.parametrize('which, model_name', [('declip_b16', 'EVA02-B-16'), ('declip_l14', 'EVA02-L-14-336'),
                                               ('eva02_b16', 'EVA02-B-16')])
def test_recorded_layout_maps_onto_the_open_clip_model(which, model_name):
    """Key for key and shape for shape (meta tensors: no memory): the conversion covers the whole open_clip model
    and drops exactly the recomputed keys."""
    import open_clip
    record = layout(which)
    with torch.device('meta'):
        clip = open_clip.create_model(model_name, device='meta')
    sd = random_state_dict(record, device='meta')
    assert is_eva_clip_state_dict(sd)
    converted, ignored = convert_eva_clip_state_dict(sd, clip)
    assert sorted(ignored) == recomputed(record)
    want = {k: tuple(v.shape) for k, v in clip.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert got == want


@pytest.mark.parametrize('wrap', ['bare', 'state_dict', 'model', 'module', 'module-prefix', 'training'])
def test_every_wrapper_the_reference_loaders_accept_unwraps_to_the_state_dict(wrap):
    """DeCLIP and EVA-CLIP's load_state_dict (eva_clip/factory.py lines 80-95) take the first of 'model', 'module',
    'state_dict' and strip a 'module.' prefix; DeCLIP's training script saves {epoch, name, state_dict, ...}."""
    record = layout('declip_b16')
    sd = {k: torch.zeros(1) for k, *_ in record['state_dict']}
    contents = {'bare': sd, 'state_dict': {'state_dict': sd}, 'model': {'model': sd}, 'module': {'module': sd},
                'module-prefix': {f'module.{k}': v for k, v in sd.items()},
                'training': {'epoch': 1, 'name': 'x', 'state_dict': sd, 'optimizer': {}}}[wrap]
    assert list(unwrap_state_dict(contents)) == list(sd)


# ------------------------------------------------------------------ real-size files through the user paths
@pytest.fixture(scope='module')
def authors_pt(tmp_path_factory):
    """The authors' DeCLIP EVA02-B/16 training checkpoint (fp32), as their main.py writes it."""
    record = layout('declip_b16')
    sd = random_state_dict(record, seed=1)
    path = tmp_path_factory.mktemp('authors') / 'epoch_6.pt'
    torch.save(authors_training_checkpoint(record, sd), path)
    return path, sd, record


@pytest.mark.slow
def test_authors_declip_pt_loads_through_tools_test_and_the_backbone(authors_pt):
    from declip_mm.engine.runner_setup import attach_checkpoint
    path, sd, record = authors_pt
    cfg = Config.fromfile(str(REGION_CONFIG))
    assert attach_checkpoint(cfg, str(path)) == 'backbone-weights'          # tools/test.py CONFIG epoch_6.pt
    assert cfg.model.backbone.pretrained == str(path) and cfg.model.backbone.strict

    backbone = DeCLIPViT('EVA02-B-16', pretrained=str(path))               # strict: raises on any mismatch
    report = backbone.load_report
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.ignored) == recomputed(record)
    visual = {k: v for k, v in sd.items() if k.startswith('visual.') and k not in report.ignored}
    found = sources({f'visual.{k}': v for k, v in backbone.visual.state_dict().items()}, visual)
    assert sorted(found.values()) == sorted(visual)                        # every file tensor used, once
    # spot-check the renames against timm's EVA names
    assert found['visual.trunk.blocks.3.attn.q_proj.bias'] == 'visual.blocks.3.attn.q_bias'
    assert found['visual.trunk.blocks.3.mlp.fc1_g.weight'] == 'visual.blocks.3.mlp.w1.weight'
    assert found['visual.trunk.head.weight'] == 'visual.head.weight'
    assert (backbone.mode, backbone.attn_scale) == ('csa', 1 / 8)          # the file stores neither


@pytest.mark.slow
def test_official_eva02_clip_b16_loads_as_backbone_and_text_weights(tmp_path):
    """BAAI's EVA02-CLIP layout in float16 (the released file's precision): image tower and text tower."""
    from declip_mm.models import OpenCLIPTextEncoder
    record = layout('eva02_b16')
    sd = random_state_dict(record, dtype=torch.float16, seed=2)
    path = tmp_path / 'EVA02_CLIP_B_psz16_s8B.pt'
    torch.save(sd, path)
    backbone = DeCLIPViT('EVA02-B-16', pretrained=str(path), mode='vanilla')
    assert backbone.load_report.missing == [] and backbone.load_report.unexpected == []
    assert sorted(backbone.load_report.ignored) == recomputed(record)
    visual = {k: v for k, v in sd.items() if k.startswith('visual.') and k not in backbone.load_report.ignored}
    found = sources({f'visual.{k}': v for k, v in backbone.visual.state_dict().items()}, visual)
    assert sorted(found.values()) == sorted(visual)
    assert all(v.dtype == torch.float32 for v in backbone.state_dict().values())
    del backbone

    text = OpenCLIPTextEncoder('EVA02-B-16', pretrained=str(path), embedding_cache=False)
    loaded = {k: v for k, v in text.clip.state_dict().items() if k.startswith('text.') or k == 'logit_scale'}
    loaded.pop('text.attn_mask', None)                                     # the causal mask: built, not loaded
    rest = {k: v for k, v in sd.items() if not k.startswith('visual.')}
    found = sources(loaded, rest)
    assert sorted(found.values()) == sorted(rest) and all(k == v for k, v in found.items())
