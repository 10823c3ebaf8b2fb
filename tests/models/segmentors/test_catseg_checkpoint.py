"""The authors' CAT-Seg checkpoint (detectron2 keys) against our CATSeg, through fixtures recorded FROM THE
REFERENCE CODE (tests/fixtures/reference/catseg_d2_state_dict_{b16,l14}.json: every non-CLIP key of the d2 model,
its shape, dtype and kind, as ``state_dict()`` of CAT-Seg @6d3a188's ``Aggregator`` and the DeCLIP_CATSeg branch's
``upsample1/2`` gives them; catseg_aggregator_forward.pt: the reference aggregator's real shift mask and its outputs
on fixed inputs). The fixtures' ``provenance`` says how they were made.

The weights and inputs of the forward cases are OURS (``synthetic_head_state`` / ``synthetic_inputs`` below, seeded):
the same functions filled the reference aggregator when the outputs were recorded, so a test regenerates them,
imports them through the converter and must reproduce the reference's outputs."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.reference

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / 'tests' / 'fixtures' / 'reference'
PREFIX = 'sem_seg_head.predictor.transformer.'
CLIP_PREFIX = 'sem_seg_head.predictor.clip_model.'
SIZES = ('b16', 'l14')
TRAIN_CONFIGS = {'b16': 'configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py',
                 'l14': 'configs/catseg/catseg_declip-eva02-l14-336_coco-stuff-336_80k.py'}
OPEN_CLIP_WIDTH = {'b16': 768, 'l14': 1024}      # EVA02-B-16 / EVA02-L-14-336 vision width (upsample1/2 inputs)


# ------------------------------------------------------------------------------------------------------------------
# Our seeded generators (also used, unchanged, to fill the reference aggregator when the fixture was recorded)
# ------------------------------------------------------------------------------------------------------------------
def mask_sha256(mask: torch.Tensor) -> str:
    return hashlib.sha256(mask.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def synthetic_head_state(entries, seed: int, attn_mask: torch.Tensor) -> dict:
    """Values for the reference's keys (``entries``: the fixture's ``keys``, in the reference's order), drawn from one
    float64 generator: Linear / Conv weights ~ N(0, 1 / fan), 1-d norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2),
    the class-slot padding N(0, 0.5^2) (so the padding path matters); ``attn_mask`` keys get the reference's mask."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in entries:
        key, shape = e['key'], tuple(e['shape'])
        if key.endswith('attn_mask'):
            out[key] = attn_mask.clone()
            continue
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if 'padding_' in key:
            x = 0.5 * x
        elif key.endswith('bias'):
            x = 0.1 * x
        elif len(shape) == 1:
            x = 1 + 0.1 * x
        else:
            x = x / math.sqrt(math.prod(shape[1:]))
        out[key] = x.to(getattr(torch, e['dtype']))
    return out


def synthetic_inputs(batch: int, classes: int, dim: int, seed: int, size: int = 24):
    """(dense (B, D, s, s) L2-normalised as the branch's encode_dense(normalize=True) gives it, text (B, T, 1, D)
    normalised, the same for every image as the predictor repeats it, res4 (B, 256, 2s, 2s), res5 (B, 128, 4s, 4s)).
    Each class's text is a point of image 0's (spatially smooth) map plus noise, so costs span about 0 to 1."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, dim, size // 4, size // 4, generator=g, dtype=torch.float64)
    dense = F.interpolate(coarse, size=(size, size), mode='bilinear', align_corners=False)
    dense = F.normalize(dense + 0.3 * torch.randn(batch, dim, size, size, generator=g, dtype=torch.float64), dim=1)
    ys = torch.randint(0, size, (classes,), generator=g)
    xs = torch.randint(0, size, (classes,), generator=g)
    noise = torch.randn(classes, dim, generator=g, dtype=torch.float64) * 0.5 / math.sqrt(dim)
    text = F.normalize(dense[0, :, ys, xs].T + noise, dim=-1)[None, :, None].expand(batch, -1, -1, -1)
    res4 = torch.randn(batch, 256, 2 * size, 2 * size, generator=g, dtype=torch.float64)
    res5 = torch.randn(batch, 128, 4 * size, 4 * size, generator=g, dtype=torch.float64)
    return tuple(t.float().contiguous() for t in (dense, text, res4, res5))


def checksum(tensors) -> list:
    """[sum, sum of |x|] in float64 over the tensors (detects a drift of the seeded generators)."""
    tensors = list(tensors)
    return [float(sum(t.double().sum() for t in tensors)), float(sum(t.double().abs().sum() for t in tensors))]


# ------------------------------------------------------------------------------------------------------------------
# Fixtures and our modules
# ------------------------------------------------------------------------------------------------------------------
def reference_layout(size: str) -> dict:
    return json.loads((FIXTURES / f'catseg_d2_state_dict_{size}.json').read_text())


def reference_arrays() -> dict:
    import numpy as np
    with np.load(FIXTURES / 'catseg_aggregator_forward.npz') as z:
        return {k: torch.from_numpy(z[k].copy()) for k in z.files}


def reference_mask() -> torch.Tensor:
    """The reference's own attn_mask (recorded as mask != 0; its values are 0 and -100), checked by its sha256."""
    mask = torch.where(reference_arrays()['attn_mask_nonzero'], -100.0, 0.0)       # +0.0, as masked_fill gives
    assert mask_sha256(mask) == reference_layout('b16')['attn_mask']['sha256_float32']
    return mask


def config_aggregator(size: str, **overrides):
    """Our CATSegAggregator exactly as the training config builds it (+ overrides)."""
    from mmengine.config import Config
    from declip_mm.models.segmentors.catseg_aggregator import CATSegAggregator
    kwargs = dict(Config.fromfile(str(REPO / TRAIN_CONFIGS[size])).model.aggregator)
    assert kwargs.pop('type') == 'CATSegAggregator'
    kwargs.update(overrides)
    return CATSegAggregator(**kwargs)


class Head(torch.nn.Module):
    """The non-CLIP part of our CATSeg, built as CATSeg.__init__ builds it (``guidance_up`` from the CLIP width)."""

    def __init__(self, size: str, **overrides):
        super().__init__()
        from mmengine.config import Config
        dims = Config.fromfile(str(REPO / TRAIN_CONFIGS[size])).model.guidance_dims
        width = OPEN_CLIP_WIDTH[size]
        self.guidance_up = torch.nn.ModuleList([torch.nn.ConvTranspose2d(width, dims[0], 2, stride=2),
                                                torch.nn.ConvTranspose2d(width, dims[1], 4, stride=4)])
        self.aggregator = config_aggregator(size, **overrides)


def reference_state(size: str, seed: int = 16) -> dict:
    layout = reference_layout(size)
    return synthetic_head_state(layout['keys'], seed, reference_mask())


# ------------------------------------------------------------------------------------------------------------------
# The layout
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', SIZES)
def test_fixture_is_the_reference_layout(size):
    layout = reference_layout(size)
    prov = layout['provenance']
    assert '6d3a188af95165147fe2f34a8237fa7d2633e784' in ' '.join(prov['reference'])
    assert '06262d4930583d3cd2b42aa30535eb586c51afee' in ' '.join(prov['reference'])
    assert prov['procedure'] and prov['date'] and prov['generated_with']
    keys = [e['key'] for e in layout['keys']]
    assert len(keys) == len(set(keys)) == layout['count'] == 134
    assert all(k.startswith(PREFIX) or k.startswith(('upsample1.', 'upsample2.')) for k in keys)
    assert {e['key'] for e in layout['keys'] if e['kind'] == 'buffer'} == set(layout['attn_mask']['keys']) == {
        f'{PREFIX}layers.{i}.swin_block.block_2.attn_mask' for i in range(2)}
    assert [k for k in keys if '.MLP.' in k] == [f'{PREFIX}layers.{i}.attention.MLP.{j}.{w}'
                                                  for i in range(2) for j in (0, 2) for w in ('weight', 'bias')]
    shapes = {e['key']: tuple(e['shape']) for e in layout['keys']}
    width = OPEN_CLIP_WIDTH[size]
    assert shapes['upsample1.weight'] == (width, 256, 2, 2) and shapes['upsample2.weight'] == (width, 128, 4, 4)
    text_dim = {'b16': 512, 'l14': 768}[size]
    assert shapes[f'{PREFIX}text_guidance_projection.0.weight'] == (128, text_dim)
    assert shapes[f'{PREFIX}guidance_projection.0.weight'] == (128, text_dim, 3, 3)


def test_our_shift_mask_is_the_references_real_mask():
    from declip_mm.models.segmentors.catseg_aggregator import shifted_window_mask
    mask = reference_mask()
    assert sorted(mask.unique().tolist()) == [-100.0, 0.0] and int((mask != 0).sum()) == 36288
    assert torch.equal(shifted_window_mask(24, 12, 6), mask)
    agg = config_aggregator('b16')
    for layer in agg.layers:
        assert layer.swin_block.block_1.attn_mask is None
        assert torch.equal(layer.swin_block.block_2.attn_mask, mask)


@pytest.mark.parametrize('size', SIZES)
def test_our_state_dict_has_the_reference_names(size):
    """Key for key: our head's state dict is the reference's, without the saved masks (ours are recomputed)."""
    layout = reference_layout(size)
    head = Head(size)
    ours = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    want = {}
    for e in layout['keys']:
        if e['key'].endswith('attn_mask'):
            continue
        key = e['key'].replace(PREFIX, 'aggregator.').replace('upsample1.', 'guidance_up.0.').replace(
            'upsample2.', 'guidance_up.1.')
        want[key] = tuple(e['shape'])
    assert ours == want


# ------------------------------------------------------------------------------------------------------------------
# The importer on the reference's keys
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', SIZES)
def test_reference_head_keys_convert_strictly(size):
    from declip_mm.models.backbones.checkpoints import convert_catseg_d2_head_state_dict as convert_head_state_dict
    d2 = reference_state(size)
    head = Head(size)
    out, ignored, unmapped = convert_head_state_dict(d2, head)
    assert not unmapped
    assert sorted(ignored) == sorted(reference_layout(size)['attn_mask']['keys'])
    head.load_state_dict(out, strict=True)
    mine = head.state_dict()
    for key, value in d2.items():
        if key in ignored:
            continue
        new = key.replace(PREFIX, 'aggregator.').replace('upsample1.', 'guidance_up.0.').replace(
            'upsample2.', 'guidance_up.1.')
        assert mine[new].dtype == value.dtype and torch.equal(mine[new], value), key
    assert len(mine) + len(ignored) == len(d2)


def test_a_mask_that_is_not_ours_stops_the_import():
    from declip_mm.models.backbones.checkpoints import convert_catseg_d2_head_state_dict as convert_head_state_dict
    d2 = reference_state('b16')
    key = f'{PREFIX}layers.1.swin_block.block_2.attn_mask'
    d2[key] = d2[key].clone()
    d2[key][0, 0, -1] = 0.0 if d2[key][0, 0, -1] else -100.0
    with pytest.raises(ValueError, match='layers.1.swin_block.block_2.attn_mask'):
        convert_head_state_dict(d2, Head('b16'))
    d2 = reference_state('b16')
    with pytest.raises(ValueError, match='feature_size / window'):      # a 16 x 16 grid's mask has 1 x 1 windows
        convert_head_state_dict(d2, Head('b16', feature_size=16, window=8))
    d2[f'{PREFIX}layers.0.swin_block.block_1.attn_mask'] = d2[key]      # no such buffer here: unmapped
    _, _, unmapped = convert_head_state_dict(d2, Head('b16'))
    assert unmapped == [f'{PREFIX}layers.0.swin_block.block_1.attn_mask']


def test_checkpoints_of_ours_saved_before_the_rename_still_load():
    from mmengine.runner.checkpoint import load_state_dict as mmengine_load
    agg = config_aggregator('b16')
    torch.manual_seed(3)
    with torch.no_grad():
        for p in agg.parameters():
            p.normal_()
    old = {k.replace('.attention.MLP.', '.attention.mlp.'): v for k, v in agg.state_dict().items()}
    assert sum('.attention.mlp.' in k for k in old) == 8
    for load in (lambda m, sd: m.load_state_dict(sd, strict=True), lambda m, sd: mmengine_load(m, sd, strict=True)):
        fresh = config_aggregator('b16')
        load(fresh, dict(old))
        for k, v in agg.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k


# ------------------------------------------------------------------------------------------------------------------
# The reference's forward, reproduced through the importer
# ------------------------------------------------------------------------------------------------------------------
# the 1 x 1-pooled cases with 256 class slots run the class aggregation at every one of 576 locations (10-25 s here)
CASES = [pytest.param(size, case['name'],
                      marks=[pytest.mark.slow] if case['pool'] == [1, 1] and case['pad_len'] == 256 else [])
         for size in SIZES for case in reference_layout(size)['forward_cases']]


@pytest.mark.parametrize('size, name', CASES)
def test_imported_weights_reproduce_the_references_forward(size, name):
    """The reference aggregator's output (recorded from CAT-Seg's code on these weights and inputs) from ours, after
    the importer: the cost volume, Swin blocks with the shift mask, class aggregation with padding, pooling or top-K,
    decoder and -100 for dropped classes all have to match."""
    from declip_mm.models.backbones.checkpoints import convert_catseg_d2_head_state_dict as convert_head_state_dict
    layout = reference_layout(size)
    case = next(c for c in layout['forward_cases'] if c['name'] == name)
    d2 = synthetic_head_state(layout['keys'], case['weight_seed'], reference_mask())
    assert checksum(v for k, v in d2.items() if not k.endswith('attn_mask')) == pytest.approx(
        case['weights_checksum'], rel=1e-12), 'the seeded weight generator drifted: regenerate the fixture'
    inputs = synthetic_inputs(case['batch'], case['classes'], layout['aggregator_kwargs']['text_guidance_dim'],
                              case['input_seed'])
    assert checksum(inputs) == pytest.approx(case['inputs_checksum'], rel=1e-12), 'the input generator drifted'
    head = Head(size, pad_len=case['pad_len'])
    out, ignored, unmapped = convert_head_state_dict(d2, head)
    assert not unmapped and len(ignored) == 2
    head.load_state_dict(out, strict=True)
    dense, text, res4, res5 = inputs
    with torch.no_grad():
        got = head.eval().aggregator(dense, text, [res4, res5], tuple(case['pool']))
    want = reference_arrays()[f'output/{name}']
    assert got.shape == want.shape == tuple(case['output_shape'])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)          # measured: 1.7e-6 here
    if case['pad_len'] < case['classes']:
        dropped = (want == -100.0).all(dim=(-2, -1))
        assert dropped.sum(dim=1).tolist() == [case['classes'] - case['pad_len']] * case['batch']
        assert torch.equal(dropped, (got == -100.0).all(dim=(-2, -1)))


@pytest.mark.slow
def test_the_full_size_b16_checkpoint_converts_strictly():
    """Every key of the released B/16 model at its real shapes: our EVA02-B/16 CATSeg built from the training config
    (random init, no download) takes the reference head (the fixture's keys, upsample1/2 from the 768-wide tower
    included) and the branch's CLIP keys (ref.clip_parameter_names for 12 + 12 blocks, plus its rope / attn_mask
    buffers), strictly, every tensor unchanged."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from reference import declip_catseg_ref as ref
    from test_backbone import to_eva_clip_format
    from declip_mm.models.backbones.checkpoints import convert_catseg_d2_state_dict as convert_state_dict
    cfg = Config.fromfile(str(REPO / TRAIN_CONFIGS['b16']))
    cfg.model.backbone.pretrained = None
    cfg.model.text_pretrained = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert model.backbone.width == OPEN_CLIP_WIDTH['b16']
    names = ref.clip_parameter_names('eva', len(model.backbone.visual.trunk.blocks),
                                     len(model.text_encoder.text.transformer.resblocks))
    shapes = dict(to_eva_clip_format(model.backbone))
    shapes.update(model.text_encoder.state_dict())
    g = torch.Generator().manual_seed(11)
    d2 = {f'{CLIP_PREFIX}{n}': torch.randn(shapes[n].shape, generator=g).to(shapes[n].dtype) for n in names}
    d2.update({f'{CLIP_PREFIX}{k}': v for k, v in shapes.items() if k not in set(names)})    # rope, text.attn_mask
    d2.update(reference_state('b16'))
    state, ignored, unmapped = convert_state_dict(d2, model)
    assert not unmapped
    assert set(reference_layout('b16')['attn_mask']['keys']) <= set(ignored)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    mine = model.state_dict()
    for key, value in d2.items():
        if key.startswith(CLIP_PREFIX) or key.endswith('attn_mask'):
            continue
        new = key.replace(PREFIX, 'aggregator.').replace('upsample1.', 'guidance_up.0.').replace(
            'upsample2.', 'guidance_up.1.')
        assert torch.equal(mine[new], value), key
    q = mine['backbone.visual.trunk.blocks.11.attn.q_proj.weight']
    assert torch.equal(q, d2[f'{CLIP_PREFIX}visual.blocks.11.attn.q_proj.weight'])
