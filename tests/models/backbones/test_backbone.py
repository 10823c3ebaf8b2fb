"""DeCLIPViT against independent computations written here from the module's own weights."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from declip_mm.models import DeCLIPViT, create_clip
from declip_mm.models.clip_factory import resolve_pretrained

REPO = Path(__file__).resolve().parents[3]
ATOL = 1e-5
SIZES = [(224, 224), (96, 160)]  # the pretraining size, and a smaller non-square one


def make_backbone(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = DeCLIPViT(name, **kwargs).eval()
    # random init leaves biases and LayerNorms at 0/1; perturb every parameter so they matter in the checks
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def images(size, batch=2, seed=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ independent reference computation
def ref_tokens_before_last_block(model, x):
    """Embedding + blocks 0..L-2, written out from the open_clip / timm modules."""
    v = model.visual
    p = model.patch_size
    h, w = x.shape[-2] // p, x.shape[-1] // p
    if model.family == 'openai':
        patches, cls, pos = F.conv2d(x, v.conv1.weight, stride=p), v.class_embedding, v.positional_embedding
    else:
        t = v.trunk
        patches = F.conv2d(x, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p)
        cls, pos = t.cls_token[0, 0], t.pos_embed[0]
    g = int(math.sqrt(pos.shape[0] - 1))
    grid_pos = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=(h, w), mode='bicubic', align_corners=False)
    tokens = torch.cat([(cls + pos[0]).expand(x.shape[0], 1, -1),
                        patches.flatten(2).transpose(1, 2) + grid_pos.flatten(2).transpose(1, 2)], dim=1)
    if model.family == 'openai':
        tokens = v.ln_pre(tokens)
        for block in v.transformer.resblocks[:-1]:
            tokens = block(tokens)
        return tokens
    import timm
    fresh = timm.create_model('declip_tiny_eva02_patch16_clip_224', img_size=tuple(x.shape[-2:]), num_classes=32)
    rope = fresh.rope.get_embed()  # timm's own table for a model built at this grid
    for block in v.trunk.blocks[:-1]:
        tokens = block(tokens, rope=rope)
    return tokens


def ref_last_block_pieces(model):
    """(LN1, q/k/v weights+biases, inner LN, out proj, per-token head) of the last block."""
    v = model.visual
    if model.family == 'openai':
        blk = v.transformer.resblocks[-1]
        W, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        C = W.shape[1]
        qkv = [(W[i * C:(i + 1) * C], b[i * C:(i + 1) * C]) for i in range(3)]
        return dict(ln1=blk.ln_1, qkv=qkv, inner=lambda o: o, out=blk.attn.out_proj,
                    head=lambda t: v.ln_post(t) @ v.proj, block=blk)
    t = v.trunk
    blk = t.blocks[-1]
    a = blk.attn
    qkv = [(a.q_proj.weight, a.q_proj.bias), (a.k_proj.weight, None), (a.v_proj.weight, a.v_proj.bias)]
    assert a.k_proj.bias is None  # EVA02: no k bias
    return dict(ln1=blk.norm1, qkv=qkv, inner=a.norm, out=a.proj, head=lambda tok: t.head(t.norm(tok)), block=blk)


def ref_decoupled(model, x, mode, scale):
    """Naive decoupled block: explicit softmax matrices, per docs/method.md section 1."""
    pieces = ref_last_block_pieces(model)
    tokens = ref_tokens_before_last_block(model, x)
    xn = pieces['ln1'](tokens)
    q, k, v = [xn @ W.t() + (b if b is not None else 0) for W, b in pieces['qkv']]
    B, N, C = q.shape
    h = model.num_heads
    qh, kh, vh = [t.reshape(B, N, h, C // h).permute(0, 2, 1, 3) for t in (q, k, v)]
    attn_q = torch.softmax(scale * qh @ qh.transpose(-1, -2), dim=-1)
    attn_k = torch.softmax(scale * kh @ kh.transpose(-1, -2), dim=-1)
    attn = {'qq': attn_q, 'kk': attn_k, 'csa': attn_q + attn_k}[mode]
    out = (attn @ vh).permute(0, 2, 1, 3).reshape(B, N, C)
    content = pieces['out'](pieces['inner'](out))
    p = model.patch_size
    dense = pieces['head'](content[:, 1:]).reshape(B, x.shape[-2] // p, x.shape[-1] // p, -1).permute(0, 3, 1, 2)
    context = {'qq': q[:, 1:], 'kk': k[:, 1:], 'csa': (q[:, 1:], k[:, 1:])}[mode]
    return dense, context, content


# ------------------------------------------------------------------ the contract
@pytest.mark.parametrize('mode', ['qq', 'kk', 'csa'])
@pytest.mark.parametrize('scale', [None, 1.0])
@pytest.mark.parametrize('size', SIZES)
def test_decoupled_modes_match_independent_computation(tiny_name, mode, scale, size):
    model = make_backbone(tiny_name, mode=mode, attn_scale=scale, out_indices=(1, 2))
    x = images(size)
    s = scale if scale is not None else 1.0 / math.sqrt(model.width // model.num_heads)
    assert model.attn_scale == pytest.approx(s)
    with torch.no_grad():
        feats = model.forward_features(x)
        ref_dense, ref_context, ref_content = ref_decoupled(model, x, mode, s)
    torch.testing.assert_close(feats.dense, ref_dense, atol=ATOL, rtol=0)
    if mode == 'csa':
        for got, want in zip(feats.context, ref_context):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(feats.context, ref_context, atol=ATOL, rtol=0)
    # the last out_index is the decoupled block's own output (what F-ViT feeds its FPN)
    grid = (size[0] // 16, size[1] // 16)
    want_tap = ref_content[:, 1:].transpose(1, 2).reshape(2, -1, *grid)
    torch.testing.assert_close(feats.intermediates[-1], want_tap, atol=ATOL, rtol=0)
    torch.testing.assert_close(model.extract_dense(x), F.normalize(ref_dense, dim=1), atol=ATOL, rtol=0)
    context = model.extract_context(x)
    torch.testing.assert_close(context[0] if mode == 'csa' else context,
                               ref_context[0] if mode == 'csa' else ref_context, atol=ATOL, rtol=0)


def test_vanilla_equals_open_clip_features(tiny_name):
    model = make_backbone(tiny_name, mode='vanilla')
    clip, _ = create_clip(tiny_name)
    clip.visual.load_state_dict(model.visual.state_dict())
    x = images((224, 224))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x, normalize=False), clip.encode_image(x), atol=ATOL, rtol=0)
        # open_clip's own last-block patch tokens, through the tower's own final norm and projection
        tokens = clip.visual.forward_intermediates(x, indices=[model.depth - 1], output_fmt='NLC',
                                                   intermediates_only=True)['image_intermediates'][0]
        want = ref_last_block_pieces(model)['head'](tokens).reshape(2, 14, 14, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(model.extract_dense(x, normalize=False), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize('size', SIZES)
def test_vanilla_and_maskclip_at_any_size(tiny_name, size):
    model = make_backbone(tiny_name)
    x = images(size)
    pieces = ref_last_block_pieces(model)
    with torch.no_grad():
        tokens = ref_tokens_before_last_block(model, x)
        grid = (size[0] // 16, size[1] // 16)
        block = pieces['block']
        if model.family == 'openai':
            vanilla = block(tokens)
        else:
            import timm
            fresh = timm.create_model('declip_tiny_eva02_patch16_clip_224', img_size=size, num_classes=32)
            vanilla = block(tokens, rope=fresh.rope.get_embed())
        W_v, b_v = pieces['qkv'][2]
        y = tokens + pieces['out'](pieces['inner'](pieces['ln1'](tokens) @ W_v.t() + b_v))
        norm2 = block.ln_2 if model.family == 'openai' else block.norm2
        maskclip = y + block.mlp(norm2(y))
        for mode, out in (('vanilla', vanilla), ('maskclip', maskclip)):
            want = pieces['head'](out[:, 1:]).reshape(2, *grid, -1).permute(0, 3, 1, 2)
            torch.testing.assert_close(model.extract_dense(x, mode=mode, normalize=False), want, atol=ATOL, rtol=0)


def test_eva_rope_positions_follow_the_grid():
    """RoPE for grid (h, w) uses positions t = arange(n) / n * 16 (EVA02's pretraining grid), per axis."""
    model = make_backbone('DeCLIP-Tiny-EVA02-16')
    rope = model.visual.trunk.rope
    d = model.width // model.num_heads           # 16 per head; 4 frequency bands per axis
    table = model.view.rope((6, 10), torch.device('cpu'))
    sin, cos = table.chunk(2, dim=-1)
    bands = rope.bands.float()
    ty = torch.arange(6) / 6 * 16
    tx = torch.arange(10) / 10 * 16
    fy = (ty[:, None, None] * bands).expand(6, 10, -1)
    fx = (tx[None, :, None] * bands).expand(6, 10, -1)
    freqs = torch.cat([fy, fx], dim=-1).repeat_interleave(2, dim=-1).reshape(60, -1)
    assert freqs.shape[-1] == d
    torch.testing.assert_close(sin, freqs.sin(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cos, freqs.cos(), atol=1e-6, rtol=0)


def test_forward_returns_maps_for_necks(tiny_name):
    model = make_backbone(tiny_name, out_indices=(0, 1, -1))
    outs = model(images((64, 128), batch=1))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 4, 8)] * 3 + [(1, 32, 4, 8)]


def test_bad_input_sizes_are_clear_errors(tiny_name):
    model = make_backbone(tiny_name)
    with pytest.raises(ValueError, match='100x96 is not a multiple of the patch size 16'):
        model.extract_dense(torch.randn(1, 3, 100, 96))
    with pytest.raises(ValueError, match=r'expected images of shape \(B, 3, H, W\)'):
        model.extract_dense(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='context features exist for the decoupled modes'):
        model.extract_context(torch.randn(1, 3, 64, 64), mode='vanilla')
    with pytest.raises(ValueError, match='mode must be one of'):
        DeCLIPViT(tiny_name, mode='bogus')
    with pytest.raises(ValueError, match='out_indices'):
        DeCLIPViT(tiny_name, out_indices=(5,))


# ------------------------------------------------------------------ regions
def test_regions_match_mmcv_roi_align_and_token_means(tiny_name):
    from mmcv.ops import RoIAlign
    model = make_backbone(tiny_name)
    x = images((96, 160))
    boxes = [torch.tensor([[0., 0., 32., 32.], [10., 20., 150., 90.]]), torch.tensor([[16., 16., 80., 64.]])]
    with torch.no_grad():
        dense = model.extract_dense(x, normalize=False)
        regions = model.extract_regions(x, boxes)
        from_dense = model.extract_regions(dense, boxes)
        rois = torch.tensor([[0, 0., 0., 32., 32.], [0, 10., 20., 150., 90.], [1, 16., 16., 80., 64.]])
        want = F.normalize(RoIAlign((1, 1), 1 / 16, 0, aligned=True)(dense, rois).flatten(1), dim=-1)
        assert [tuple(r.shape) for r in regions] == [(2, 32), (1, 32)]
        torch.testing.assert_close(torch.cat(regions), want, atol=ATOL, rtol=0)
        torch.testing.assert_close(torch.cat(from_dense), want, atol=ATOL, rtol=0)
        # a box covering token cells [0, 2) x [0, 2) pools exactly their mean (aligned, adaptive sampling)
        raw = model.extract_regions(dense, [torch.tensor([[0., 0., 32., 32.]]), torch.zeros(0, 4)],
                                    normalize=False)[0]
        torch.testing.assert_close(raw[0], dense[0, :, :2, :2].mean(dim=(1, 2)), atol=ATOL, rtol=0)
        in_tokens = model.extract_regions(dense, [torch.tensor([[0., 0., 2., 2.]]), torch.zeros(0, 4)],
                                          box_units='tokens', normalize=False)[0]
        torch.testing.assert_close(in_tokens, raw, atol=ATOL, rtol=0)
        cells = model.extract_regions(dense, boxes, output_size=2)
        assert [tuple(c.shape) for c in cells] == [(2, 4, 32), (1, 4, 32)]
        torch.testing.assert_close(cells[0].norm(dim=-1), torch.ones(2, 4), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match='boxes for 1 images but a batch of 2'):
        model.extract_regions(dense, boxes[:1])
    with pytest.raises(ValueError, match=r'boxes\[0\] must be \(n, 4\)'):
        model.extract_regions(dense, [torch.zeros(2, 5), torch.zeros(0, 4)])


# ------------------------------------------------------------------ trainable split
@pytest.mark.parametrize('mode', ['csa', 'qq'])
def test_gradients_reach_only_trainable_parts(tiny_name, mode):
    model = make_backbone(tiny_name, mode=mode).train()
    x = images((64, 96))
    feats = model.forward_features(x)
    ctx = feats.context if isinstance(feats.context, tuple) else (feats.context,)
    (feats.dense.square().mean() + sum(c.square().mean() for c in ctx)).backward()
    view = model.view
    frozen = {id(p) for p in [*view.stem_params(), *view.head_params()]}
    last = view.blocks[-1]
    frozen |= {id(p) for p in view.unused_in_decoupled_block(last)}
    if mode == 'qq' and model.family == 'eva':
        frozen |= {id(p) for p in last.attn.k_proj.parameters()}
    for name, p in model.named_parameters():
        if id(p) in frozen:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in DeCLIPViT(tiny_name, trainable='none').parameters())
    assert all(p.requires_grad for p in DeCLIPViT(tiny_name, trainable='all').parameters())


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_restores_weights_and_settings(tiny_name, tmp_path):
    model = make_backbone(tiny_name, mode='qq', attn_scale=1.0, input_size=224)
    path = tmp_path / 'declip.pth'
    model.save_checkpoint(str(path))
    loaded = DeCLIPViT(tiny_name, pretrained=str(path))
    assert (loaded.mode, loaded.attn_scale, loaded.input_size) == ('qq', 1.0, 224)
    assert loaded.load_report.missing == [] and loaded.load_report.unexpected == []
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    x = images((64, 64))
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract_dense(x), model.extract_dense(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="trained with mode='qq'"):
        DeCLIPViT(tiny_name, pretrained=str(path), mode='csa')
    other = 'DeCLIP-Tiny-ViT-16' if 'EVA' in tiny_name else 'DeCLIP-Tiny-EVA02-16'
    with pytest.raises(ValueError, match='holds a DeCLIPViT of model'):
        DeCLIPViT(other, pretrained=str(path))


def test_missing_and_unexpected_keys_are_reported(tiny_name, tmp_path):
    model = make_backbone(tiny_name)
    sd = {f'visual.{k}': v for k, v in model.visual.state_dict().items()}
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd['visual.not_a_weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pt'
    torch.save(sd, path)
    with pytest.raises(KeyError, match='1 missing keys .*' + dropped.replace('.', r'\.') + r'.*not_a_weight'):
        DeCLIPViT(tiny_name, pretrained=str(path))
    loose = DeCLIPViT(tiny_name, pretrained=str(path), strict=False)
    assert dropped in loose.load_report.missing and 'visual.not_a_weight' in loose.load_report.unexpected


def to_eva_clip_format(model):
    """Our tiny EVA's image tower in the authors' EVA-CLIP / DeCLIP key layout (the inverse of timm's mapping).

    The layout is the one recorded by running the reference model code (tests/fixtures/reference/
    declip_authors_pt_b16.json, xiaomoguhz/DeCLIP@2c0b3de; test_eva_clip_format_is_the_reference_layout checks the
    key set against it): among others the rotary tables are saved once under visual.rope and once under every
    block's attn.rope (the module is shared), each (pretraining grid cells, head width)."""
    out = {}
    for k, v in model.visual.trunk.state_dict().items():
        k = (k.replace('attn.q_proj.bias', 'attn.q_bias').replace('attn.v_proj.bias', 'attn.v_bias')
              .replace('attn.norm.', 'attn.inner_attn_ln.').replace('mlp.fc1_g.', 'mlp.w1.')
              .replace('mlp.fc1_x.', 'mlp.w2.').replace('mlp.fc2.', 'mlp.w3.').replace('mlp.norm.', 'mlp.ffn_ln.'))
        out[f'visual.{k}'] = v
    trunk = model.visual.trunk
    cells, head_dim = math.prod(trunk.patch_embed.grid_size), model.width // model.num_heads
    for owner in ['visual.rope'] + [f'visual.blocks.{i}.attn.rope' for i in range(len(trunk.blocks))]:
        out[f'{owner}.freqs_cos'] = torch.ones(cells, head_dim)
        out[f'{owner}.freqs_sin'] = torch.zeros(cells, head_dim)
    return out


def test_eva_clip_format_is_the_reference_layout():
    """The synthetic authors' file of the tests below has exactly the key layout (block index aside) and the rotary
    table shape rule of the checkpoint the authors' code writes (fixture recorded from their model code)."""
    import json
    import re
    record = json.loads((REPO / 'tests/fixtures/reference/declip_authors_pt_b16.json').read_text())
    model = make_backbone('DeCLIP-Tiny-EVA02-16')
    clip, _ = create_clip('DeCLIP-Tiny-EVA02-16')
    ours = to_eva_clip_format(model)
    ours.update({f'text.{k}': v for k, v in clip.text.state_dict().items()})
    ours['logit_scale'] = clip.logit_scale.detach()
    template = lambda key: re.sub(r'\.\d+\.', '.N.', key)  # noqa: E731
    assert sorted({template(k) for k in ours}) == sorted({template(k) for k, *_ in record['state_dict']})
    shapes = {k: shape for k, shape, *_ in record['state_dict']}
    assert shapes['visual.rope.freqs_cos'] == shapes['visual.blocks.11.attn.rope.freqs_cos'] == [(224 // 16) ** 2, 64]
    assert list(ours['visual.blocks.1.attn.rope.freqs_sin'].shape) == [196, model.width // model.num_heads]


def load_tool(relpath):
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_authors_eva_clip_checkpoint_converts(tmp_path):
    from test_authors_checkpoints import authors_training_checkpoint, layout
    model = make_backbone('DeCLIP-Tiny-EVA02-16', mode='csa', attn_scale=1.0)
    clip, _ = create_clip('DeCLIP-Tiny-EVA02-16')
    authors = to_eva_clip_format(model)
    authors.update({f'text.{k}': v for k, v in clip.text.state_dict().items()})
    authors['logit_scale'] = clip.logit_scale.detach()
    src = tmp_path / 'DeCLIP_EVA-tiny_csa.pt'
    # saved as the authors' training script saves it: {epoch, name, state_dict, optimizer, scaler}, no prefix
    torch.save(authors_training_checkpoint(layout('declip_b16'), authors), src)

    converter = load_tool('tools/converters/eva_clip_to_declip.py')
    dst = tmp_path / 'ours.pth'
    converter.main([str(src), str(dst), '--model-name', 'DeCLIP-Tiny-EVA02-16', '--mode', 'csa',
                    '--attn-scale', '1.0', '--input-size', '560'])
    ours = DeCLIPViT('DeCLIP-Tiny-EVA02-16', pretrained=str(dst))
    assert (ours.mode, ours.attn_scale, ours.input_size) == ('csa', 1.0, 560)
    x = images((96, 160))
    with torch.no_grad():
        torch.testing.assert_close(ours.extract_dense(x), model.extract_dense(x), rtol=0, atol=0)
    # the authors' file also loads directly; rotary tables (top level and per block) are reported as ignored
    direct = DeCLIPViT('DeCLIP-Tiny-EVA02-16', pretrained=str(src), mode='csa', attn_scale=1.0)
    assert sorted(direct.load_report.ignored) == sorted(k for k in authors if '.rope.' in k)
    with pytest.raises(ValueError, match='needs an EVA02 open_clip model'):
        DeCLIPViT('DeCLIP-Tiny-ViT-16', pretrained=str(src))


def test_export_to_open_clip_round_trip_is_exact(tiny_name, tmp_path):
    import open_clip
    model = make_backbone(tiny_name, mode='kk', attn_scale=1.0)
    ours = tmp_path / 'ours.pth'
    model.save_checkpoint(str(ours))
    torch.manual_seed(3)
    original, _ = create_clip(tiny_name)
    original_file = tmp_path / 'original_clip.pt'
    torch.save(original.state_dict(), original_file)

    exporter = load_tool('tools/converters/declip_to_open_clip.py')
    exported = tmp_path / 'open_clip_format.pt'
    exporter.main([str(ours), str(exported), '--text-weights', str(original_file)])
    loaded = open_clip.create_model(tiny_name, pretrained=str(exported))  # open_clip's own loader, strict
    for k, v in original.state_dict().items():
        if not k.startswith('visual.'):
            torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    back = DeCLIPViT(tiny_name, pretrained=str(exported), mode='kk', attn_scale=1.0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)


def test_pretrained_tags_resolve_offline(monkeypatch, tmp_path):
    monkeypatch.setenv('DECLIP_WEIGHTS', str(tmp_path / 'weights'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    hub = tmp_path / 'hub'
    with pytest.raises(FileNotFoundError) as err:
        resolve_pretrained('EVA02-B-16', 'merged2b_s8b_b131k', cache_dir=str(hub))
    message = str(err.value)
    assert 'timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k' in message
    assert str(tmp_path / 'weights' / 'EVA02-B-16' / 'merged2b_s8b_b131k') in message
    with pytest.raises(ValueError, match="'no-such-tag' is neither a file nor an open_clip pretrained tag"):
        resolve_pretrained('ViT-B-16', 'no-such-tag')
    with pytest.raises(FileNotFoundError, match='weights file not found: /nope/w.pt'):
        resolve_pretrained('ViT-B-16', '/nope/w.pt')

    # 1) our weights folder
    local = tmp_path / 'weights' / 'ViT-B-16' / 'openai'
    local.mkdir(parents=True)
    (local / 'open_clip_model.safetensors').write_bytes(b'x')
    assert resolve_pretrained('ViT-B-16', 'openai') == str(local / 'open_clip_model.safetensors')
    # 2) the Hugging Face cache, where open_clip would have downloaded it
    snap = hub / 'models--timm--eva02_base_patch16_clip_224.merged2b_s8b_b131k' / 'snapshots' / 'abc123'
    snap.mkdir(parents=True)
    (snap / 'open_clip_pytorch_model.bin').write_bytes(b'x')
    (hub / 'models--timm--eva02_base_patch16_clip_224.merged2b_s8b_b131k' / 'refs').mkdir()
    (hub / 'models--timm--eva02_base_patch16_clip_224.merged2b_s8b_b131k' / 'refs' / 'main').write_text('abc123')
    assert resolve_pretrained('EVA02-B-16', 'merged2b_s8b_b131k', cache_dir=str(hub)) == \
        str(snap / 'open_clip_pytorch_model.bin')
