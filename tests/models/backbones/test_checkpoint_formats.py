"""Every checkpoint format, through the one module that knows them (declip_mm/models/backbones/checkpoints.py).

For each format the module lists, a tiny file in that layout (the key lists recorded from the reference code where
they exist: tests/fixtures/reference/declip_authors_pt_b16.json, eva02_clip_b16.json, catseg_d2_state_dict_b16.json)
is read through the one entry point (``read_checkpoint``: the safe ``utils.checkpoint_io.load_checkpoint``), detected
as that format, and loaded into a model with ``load_into``: nothing missing or unexpected, every tensor the file's.
``attach_checkpoint`` (tools/test.py) decides from the same detection. And no module but utils/checkpoint_io.py calls
``torch.load`` on a checkpoint (read from the source with ``ast``; the tests are not scanned).
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from declip_mm.models import DeCLIPViT, create_clip
from declip_mm.models.backbones.checkpoints import (CATSEG_D2, CLIP_FORMATS, DECLIP_VIT, EVA_CLIP, FORMATS, MMENGINE,
                                                    OPEN_CLIP, OPEN_CLIP_HF, UNKNOWN, Checkpoint, detect_format,
                                                    hf_layout, load_into, parse_checkpoint, read_checkpoint,
                                                    read_hf_config, stored_settings)
from declip_mm.utils import load_checkpoint

REPO = Path(__file__).resolve().parents[3]
TINY_EVA, TINY_VIT = 'DeCLIP-Tiny-EVA02-16', 'DeCLIP-Tiny-ViT-16'


def template(key: str) -> str:
    return re.sub(r'\.\d+\.', '.N.', key)


def perturbed(module: torch.nn.Module, seed: int):
    """Move every weight off its initial value, so that a tensor left at init cannot pass for a loaded one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def assert_loaded(model: torch.nn.Module, expected: dict):
    """Every ``expected`` entry (model key -> tensor) is in the model's state dict, unchanged."""
    mine = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(mine[key], value.to(mine[key].dtype)), key


# ------------------------------------------------------------------------------------------------------------------
# One tiny file per format: (path, a fresh model to load it into, {model key: tensor it must hold}, ignored keys)
# ------------------------------------------------------------------------------------------------------------------
def open_clip_hf_folder(tmp_path):
    """open_clip's Hugging Face layout (open_clip_config.json + open_clip_model.safetensors), written by
    export_hf_dir from a DeCLIPViT: its 'declip' entry carries the mode (tests/models/backbones/test_hf_layout.py: the whole layout)."""
    from declip_mm.models.backbones.checkpoints import export_hf_dir
    ours = perturbed(DeCLIPViT(TINY_EVA, mode='kk', attn_scale=1.0, input_size=96), 9)
    folder = export_hf_dir(ours, tmp_path / 'declip_tiny_hf')
    clip = create_clip(TINY_EVA, str(folder))[0]
    return folder, create_clip(TINY_EVA)[0], clip.state_dict(), []


def declip_vit_file(tmp_path):
    ours = perturbed(DeCLIPViT(TINY_EVA, mode='kk', attn_scale=1.0, input_size=96), 1)
    path = tmp_path / 'declip_backbone_final.pth'
    ours.save_checkpoint(str(path))
    return path, DeCLIPViT(TINY_EVA, mode='kk'), ours.state_dict(), []


def authors_eva_clip_state_dict(seed: int):
    """Our tiny EVA CLIP in the authors' EVA-CLIP / DeCLIP layout, whose key templates are the recorded ones."""
    from test_authors_checkpoints import layout
    from test_backbone import to_eva_clip_format
    clip = perturbed(create_clip(TINY_EVA)[0], seed)
    backbone = DeCLIPViT(TINY_EVA)
    backbone.visual.load_state_dict(clip.visual.state_dict())
    sd = to_eva_clip_format(backbone)
    sd.update({f'text.{k}': v for k, v in clip.text.state_dict().items()})
    sd['logit_scale'] = clip.logit_scale.detach()
    for which in ('declip_b16', 'eva02_b16'):
        assert sorted({template(k) for k in sd}) == sorted({template(k) for k, *_ in layout(which)['state_dict']})
    expected = {k: v for k, v in clip.state_dict().items() if k != 'text.attn_mask'}
    return sd, expected, sorted(k for k in sd if '.rope.' in k)


def eva_clip_authors_pt_file(tmp_path):
    """The authors' DeCLIP training checkpoint: {epoch, name, state_dict, optimizer, scaler}, as recorded."""
    from test_authors_checkpoints import authors_training_checkpoint, layout
    sd, expected, ignored = authors_eva_clip_state_dict(2)
    path = tmp_path / 'epoch_6.pt'
    torch.save(authors_training_checkpoint(layout('declip_b16'), sd), path)
    return path, create_clip(TINY_EVA)[0], expected, ignored


def eva_clip_baai_file(tmp_path):
    """BAAI's EVA02-CLIP release: a bare state dict in float16."""
    sd, expected, ignored = authors_eva_clip_state_dict(3)
    path = tmp_path / 'EVA02_CLIP_tiny.pt'
    torch.save({k: v.half() for k, v in sd.items()}, path)
    return path, create_clip(TINY_EVA)[0], {k: v.half() for k, v in expected.items()}, ignored


def open_clip_file(tmp_path):
    clip = perturbed(create_clip(TINY_VIT)[0], 4)
    path = tmp_path / 'open_clip_pytorch_model.bin'
    torch.save(clip.state_dict(), path)
    return path, create_clip(TINY_VIT)[0], clip.state_dict(), []


def catseg_model():
    """Our CATSeg as the B/16 training config builds it (the head the recorded keys fit), with the tiny EVA tower."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(str(REPO / 'configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py'))
    cfg.model.backbone.update(model_name=TINY_EVA, pretrained=None, out_indices=(0, 1))
    cfg.model.update(text_model=TINY_EVA, text_pretrained=None, class_names=['cat', 'dog', 'sky'])
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def catseg_d2_file(tmp_path):
    """The released CAT-Seg model's layout: the head by the recorded keys (catseg_d2_state_dict_b16.json, with the
    reference's saved shift masks; only upsample1/2's input width is the tiny tower's), the CLIP part in the authors'
    EVA-CLIP layout under sem_seg_head.predictor.clip_model, in detectron2's {'model', 'iteration'}."""
    from test_backbone import to_eva_clip_format
    from test_catseg_checkpoint import CLIP_PREFIX, reference_layout, reference_mask, synthetic_head_state
    source = perturbed(catseg_model(), 5)
    width = source.backbone.width
    keys = [dict(e, shape=[width] + e['shape'][1:]) if e['key'] in ('upsample1.weight', 'upsample2.weight') else e
            for e in reference_layout('b16')['keys']]
    d2 = synthetic_head_state(keys, 7, reference_mask())
    d2.update({f'{CLIP_PREFIX}{k}': v for k, v in to_eva_clip_format(source.backbone).items()})
    d2.update({f'{CLIP_PREFIX}{k}': v for k, v in source.text_encoder.state_dict().items()})
    path = tmp_path / 'model_final.pth'
    torch.save({'model': d2, 'iteration': 79999}, path)
    renames = (('sem_seg_head.predictor.transformer.', 'aggregator.'), ('upsample1.', 'guidance_up.0.'),
               ('upsample2.', 'guidance_up.1.'))
    expected = {}
    for key, value in d2.items():
        for old, new in renames:
            if key.startswith(old) and not key.endswith('attn_mask'):
                expected[new + key[len(old):]] = value
    expected.update({f'backbone.{k}': v for k, v in source.backbone.state_dict().items()})
    expected.update({f'text_encoder.{k}': v for k, v in source.text_encoder.state_dict().items()
                     if not k.endswith('attn_mask')})
    ignored = sorted(k for k in d2 if k.endswith('attn_mask') or '.rope.' in k)
    return path, catseg_model(), expected, [k.replace(CLIP_PREFIX, '') for k in ignored]


class WholeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = DeCLIPViT(TINY_VIT)
        self.head = torch.nn.Linear(4, 3)


def mmengine_file(tmp_path):
    """What an mmengine Runner saves: {meta, state_dict, message_hub, optimizer}, numpy and HistoryBuffer included
    (the safe loader's allow-list)."""
    from mmengine.logging import MessageHub
    model = perturbed(WholeModel(), 8)
    hub = MessageHub.get_instance('test_checkpoint_formats')
    hub.update_scalar('train/loss', 0.5)
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1, seed=np.int64(0), hist=np.arange(3)), state_dict=model.state_dict(),
                    message_hub=hub.state_dict(), optimizer=dict(state={}, param_groups=[dict(lr=0.1, params=[0])])),
               path)
    return path, WholeModel(), model.state_dict(), []


CASES = {  # a new format gets its row here (and the test below fails until it has one)
    'open_clip_hf': (OPEN_CLIP_HF, open_clip_hf_folder),
    'declip_vit': (DECLIP_VIT, declip_vit_file),
    'eva_clip authors .pt': (EVA_CLIP, eva_clip_authors_pt_file),
    'eva_clip BAAI fp16': (EVA_CLIP, eva_clip_baai_file),
    'open_clip': (OPEN_CLIP, open_clip_file),
    'catseg_d2': (CATSEG_D2, catseg_d2_file),
    'mmengine': (MMENGINE, mmengine_file),
}


def test_the_module_lists_every_format_and_each_has_a_file_here():
    assert list(FORMATS) == [OPEN_CLIP_HF, DECLIP_VIT, EVA_CLIP, OPEN_CLIP, CATSEG_D2, MMENGINE]  # detection order
    assert {fmt for fmt, _ in CASES.values()} == set(FORMATS)
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.what and fmt.detected_by and fmt.converted and callable(fmt.detect)
    assert set(CLIP_FORMATS) == {OPEN_CLIP_HF, EVA_CLIP, OPEN_CLIP}


@pytest.mark.parametrize('case', list(CASES))
def test_each_format_is_detected_and_loads_through_the_one_entry_point(case, tmp_path):
    fmt, make = CASES[case]
    path, model, expected, ignored = make(tmp_path)
    found = read_checkpoint(path)                         # safe: weights_only + allow-list, no trust needed
    assert isinstance(found, Checkpoint) and found.format == fmt and found.source == str(path)
    if fmt == OPEN_CLIP_HF:                               # a folder: its config is handed on with the weights
        config, weights = hf_layout(path)
        contents = {'open_clip_config': read_hf_config(config), 'state_dict': load_checkpoint(weights)}
        assert detect_format(contents) == fmt
        assert detect_format(load_checkpoint(weights)) == OPEN_CLIP   # the weights file alone
    else:
        assert detect_format(load_checkpoint(path)) == fmt
    assert found.describe().startswith(FORMATS[fmt].what)
    report = load_into(model, found)                      # strict: raises on any mismatch
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.ignored) == sorted(ignored)
    assert_loaded(model, expected)
    if fmt in (DECLIP_VIT, OPEN_CLIP_HF):
        assert found.meta['mode'] == 'kk' and stored_settings(str(path)) == found.meta
    else:
        assert stored_settings(str(path)) == {}
    if case == 'eva_clip authors .pt':
        assert found.wrapper == 'state_dict' and set(found.top_level) == {'epoch', 'name', 'state_dict', 'optimizer',
                                                                             'scaler'}


def test_wrappers_prefixes_and_what_is_no_checkpoint():
    sd = {'visual.pos_embed': torch.zeros(1), 'text.token_embedding.weight': torch.zeros(1)}
    for contents, wrapper in [(sd, 'bare'), ({'model': sd}, 'model'), ({'state_dict': sd}, 'state_dict'),
                              ({'module': sd}, 'module'), ({f'module.{k}': v for k, v in sd.items()},
                                                           'bare + module. prefix')]:
        found = parse_checkpoint(contents)
        assert (found.format, found.wrapper, sorted(found.state_dict)) == (EVA_CLIP, wrapper, sorted(sd))
    assert parse_checkpoint({'visual.trunk.pos_embed': torch.zeros(1)}).format == OPEN_CLIP
    assert parse_checkpoint({'student.visual.x': torch.zeros(1)}).format == MMENGINE
    for contents in ([1, 2], {}, torch.zeros(2)):
        found = parse_checkpoint(contents, 'x.pth')
        assert found.format == UNKNOWN and found.problem
        with pytest.raises((TypeError, ValueError)):
            load_into(torch.nn.Linear(1, 1), found)


def test_stored_settings_read_a_legacy_file_too(tmp_path):
    """Memory-mapping needs a zip archive; a legacy (pickle) torch file is read whole, same answer."""
    path = tmp_path / 'legacy.pth'
    ours = DeCLIPViT(TINY_VIT, mode='qq', attn_scale=1.0)
    torch.save(dict(state_dict=ours.state_dict(), meta=dict(declip=ours.declip_meta())), path,
               _use_new_zipfile_serialization=False)
    assert stored_settings(str(path))['mode'] == 'qq' and read_checkpoint(path, mmap=True).format == DECLIP_VIT


@pytest.mark.parametrize('case, how', [('declip_vit', 'backbone'), ('eva_clip authors .pt', 'backbone-weights'),
                                       ('open_clip_hf', 'backbone-weights'),
                                       ('open_clip', 'backbone-weights'), ('mmengine', 'load_from'),
                                       ('catseg_d2', 'catseg_d2_to_declip.py')])
def test_tools_test_decides_from_the_detected_format(case, how, tmp_path, monkeypatch):
    """attach_checkpoint only edits the config, from what the module says the file is."""
    from declip_mm.engine.runner_setup import attach_checkpoint
    from declip_mm.models.backbones import checkpoints
    fmt, make = CASES[case]
    path = make(tmp_path)[0]
    name = TINY_VIT if case in ('open_clip', 'mmengine') else TINY_EVA
    cfg = Config(dict(model=dict(type='TrainingFreeSegmentor', backbone=dict(type='DeCLIPViT', model_name=name),
                                 head=dict(type='Linear'))))
    asked = []
    read = checkpoints.read_checkpoint
    monkeypatch.setattr(checkpoints, 'read_checkpoint', lambda p, *a, **k: asked.append(p) or read(p, *a, **k))
    if how.endswith('.py'):
        with pytest.raises(ValueError, match=how):
            attach_checkpoint(cfg, str(path))
    else:
        assert attach_checkpoint(cfg, str(path)) == how
    assert asked == [str(path)]


# ------------------------------------------------------------------------------------------------------------------
# One torch.load
# ------------------------------------------------------------------------------------------------------------------
# torch.load calls outside utils/checkpoint_io.py on files that are not checkpoints: tensor files this package writes
# itself, each read with weights_only=True
DATA_FILES = {
    'declip_mm/models/text/text_encoder.py': 'the text-embedding cache ($DECLIP_CACHE/text_embeddings)',
    'declip_mm/models/text/embedding_file.py': 'class-embedding files (tools/dump_class_embeddings.py)',
    'declip_mm/models/detectors/fvit_heads.py': 'class-embedding files of the F-ViT classifier',
    'declip_mm/models/distillers/teacher_cache.py': "the distillation's teacher-feature cache",
}


def torch_load_calls(path: Path):
    """(line, keyword names) of every torch.load / torch.serialization.load call and ``from torch import load``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ('torch', 'torch.serialization') and \
                any(a.name == 'load' for a in node.names):
            yield node.lineno, None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'load':
            owner = ast.unparse(node.func.value)
            if owner in ('torch', 'torch.serialization', 'serialization'):
                weights_only = next((ast.unparse(k.value) for k in node.keywords if k.arg == 'weights_only'), None)
                yield node.lineno, weights_only


def test_no_module_but_checkpoint_io_calls_torch_load():
    found = {}
    for folder in ('declip_mm', 'tools', 'projects'):
        for path in (REPO / folder).rglob('*.py'):
            rel = path.relative_to(REPO)
            if 'tests' in rel.parts:
                continue
            calls = list(torch_load_calls(path))
            if calls:
                found[str(rel)] = calls
    assert found.pop('declip_mm/utils/checkpoint_io.py'), 'the safe loader itself calls torch.load'
    offenders = {f: c for f, c in found.items() if f not in DATA_FILES}
    assert not offenders, f'read checkpoints with declip_mm.models.backbones.checkpoints.read_checkpoint: {offenders}'
    unsafe = {f: c for f, c in found.items() if any(w != 'True' for _, w in c)}
    assert not unsafe, f'data files are read with weights_only=True: {unsafe}'
    assert set(found) == set(DATA_FILES), f'stale DATA_FILES entries: {set(DATA_FILES) - set(found)}'
