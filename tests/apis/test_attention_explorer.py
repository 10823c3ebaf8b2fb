"""The attention and affinity explorer (declip_mm/apis/attention.py, ``declip-mm attention``, POST /api/attention).

The maps are checked against the towers' own attention computed independently here: PyTorch's
nn.MultiheadAttention weights (OpenAI towers) and timm's EVA attention probabilities with its rotary embedding
(captured from the unfused path), and q / k recomputed from the last block's weights. Pixels -> tokens on
non-square images after the long-side resize and the patch padding; the web click maps page coordinates to the
same token; the command writes its files, refuses bad points before any model is built, and marks random weights.
"""
import base64
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from declip_mm.apis.attention import (AttentionExplorer, PointError, input_geometry, page_to_pixel, parse_point,
                                      pixel_to_token)
from declip_mm.cli import main

TINY_VIT = dict(arch='dinov2_vits14_reg', model_kwargs=dict(embed_dim=48, depth=2, num_heads=3))
LONG = 64


@pytest.fixture(scope='module')
def photo(sample_root):
    return sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[0]


@pytest.fixture(scope='module')
def explorer():
    torch.manual_seed(0)
    return AttentionExplorer('DeCLIP-Tiny-ViT-16', precision='fp32', long_side=LONG, attn_scale=0.5, vfm=TINY_VIT)


def manual_qk(block, x, heads, family):
    """q, k (h, N, d) of the last block, from its weights (the test's own arithmetic)."""
    if family == 'openai':
        xn = F.layer_norm(x, x.shape[-1:], block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
        C = x.shape[-1]
        q, k = xn @ w[:C].T + b[:C], xn @ w[C:2 * C].T + b[C:2 * C]
    else:
        xn = block.norm1(x)
        a = block.attn
        if a.qkv is not None:
            C = x.shape[-1]
            q = xn @ a.qkv.weight[:C].T + (a.q_bias if a.q_bias is not None else 0)
            k = xn @ a.qkv.weight[C:2 * C].T
        else:
            q, k = a.q_proj(xn), a.k_proj(xn)
    N, C = q.shape
    return q.reshape(N, heads, C // heads).transpose(0, 1), k.reshape(N, heads, C // heads).transpose(0, 1)


def last_block_input(bb, x):
    captured = {}
    handle = bb.view.blocks[-1].register_forward_pre_hook(lambda m, a, kw=None: captured.setdefault('x', a[0]))
    try:
        with torch.no_grad():
            bb.encode_image(x)
    finally:
        handle.remove()
    return captured['x'][0]


@pytest.mark.parametrize('name', ['DeCLIP-Tiny-ViT-16', 'DeCLIP-Tiny-EVA02-16'])
def test_maps_equal_the_towers_own_attention(name, photo):
    torch.manual_seed(0)
    ex = AttentionExplorer(name, precision='fp32', long_side=LONG, attn_scale=0.5)
    rgb = np.asarray(Image.open(photo).convert('RGB'))
    H, W = rgb.shape[:2]
    points = [(W * 0.3, H * 0.6), (W - 1, H - 1)]
    maps = ex(rgb, points)
    bb = ex.backbone
    x, _ = ex.features._input(rgb)
    gh, gw = maps.grid
    assert (gh, gw) == (x.shape[1] // 16, x.shape[2] // 16) and maps.grid != (gh, gh)      # non-square
    rows = [1 + r * gw + c for r, c in maps.tokens]
    block = bb.view.blocks[-1]
    tokens = last_block_input(bb, x[None])

    # (1) vanilla: the tower's own attention probabilities at the point's row
    with torch.no_grad():
        if bb.family == 'openai':
            xn = block.ln_1(tokens[None])
            _, probs = block.attn(xn, xn, xn, need_weights=True, average_attn_weights=True)   # PyTorch's MHA
            probs = probs[0]
        else:
            captured = {}
            block.attn.fused_attn = False
            hook = block.attn.attn_drop.register_forward_hook(lambda m, a, out: captured.setdefault('p', out))
            try:
                bb.encode_image(x[None])                                # the unmodified block, rotary included
            finally:
                hook.remove()
                block.attn.fused_attn = True
            probs = captured['p'][0].mean(0)
    want = probs[rows][:, 1:].reshape(len(rows), gh, gw).numpy()
    np.testing.assert_allclose(maps.panels['vanilla'], want, atol=1e-5, rtol=0)

    # (2) csa at 1/sqrt(d), (3) the model's mode ('csa') at its attn_scale 0.5: from the block's weights
    with torch.no_grad():
        q, k = manual_qk(block, tokens, bb.num_heads, bb.family)
    d = q.shape[-1]

    def att(a, scale):
        return torch.softmax(scale * a[:, rows] @ a.transpose(1, 2), -1).mean(0)[:, 1:].reshape(len(rows), gh, gw)
    np.testing.assert_allclose(maps.panels['csa'], (att(q, d ** -0.5) + att(k, d ** -0.5)).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(maps.panels['declip'], (att(q, 0.5) + att(k, 0.5)).numpy(), atol=1e-5, rtol=0)
    assert not np.allclose(maps.panels['csa'], maps.panels['declip'])

    # (4) the dense map's cosine, from the public extract_dense
    with torch.no_grad():
        dense = bb.extract_dense(x[None])[0].flatten(1)                                  # (D, h*w), normalised
    np.testing.assert_allclose(maps.panels['dense'], (dense[:, [r - 1 for r in rows]].T @ dense).reshape(
        len(rows), gh, gw).numpy(), atol=1e-5, rtol=0)
    for i, (r, c) in enumerate(maps.tokens):
        assert maps.panels['dense'][i, r, c] == pytest.approx(1, abs=1e-5)
    assert maps.tokens[1] == (gh - 1, gw - 1)
    assert 'vfm' not in maps.panels and 'sd' not in maps.panels


def test_vfm_panel_is_the_distillation_target(explorer, photo):
    from declip_mm.datasets.distill_dataset import resize_and_pad
    rgb = np.asarray(Image.open(photo).convert('RGB'))
    H, W = rgb.shape[:2]
    maps = explorer(rgb, [(W / 2, H / 2)])
    gh, gw = maps.grid
    side = max(gh, gw)
    view = resize_and_pad(Image.fromarray(rgb), side * 14)[None].float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = explorer.vfm.model.forward_features(((view - mean) / std))[0, 5:]          # CLS + 4 registers
    r, c = maps.tokens[0]
    cos = F.cosine_similarity(feats[r * side + c][None], feats, dim=-1).reshape(side, side)[:gh, :gw]
    np.testing.assert_allclose(maps.panels['vfm'][0], cos.numpy(), atol=1e-5, rtol=0)
    assert list(maps.panels) == ['vanilla', 'csa', 'declip', 'dense', 'vfm']
    fig = maps.figure(note='RANDOM WEIGHTS: results are meaningless')
    assert fig.width > 5 * 100 and fig.height > 100


def test_pixel_to_token_non_square_and_resized(explorer):
    # 50 x 80 at long side 64: resized to 40 x 64, padded to 48 x 64: a 3 x 4 grid
    assert input_geometry((50, 80), 64, 16) == ((40, 64), (3, 4))
    assert pixel_to_token(79, 49, (50, 80), 64, 16) == (2, 3)                           # bottom-right: last token
    assert pixel_to_token(79.999, 49.999, (50, 80), 64, 16) == (2, 3)
    assert pixel_to_token(0, 0, (50, 80), 64, 16) == (0, 0)
    for bad in ((80, 0), (0, 50), (-0.1, 3), (3, -1)):
        with pytest.raises(PointError, match='outside the 80 x 50 image'):
            pixel_to_token(*bad, (50, 80), 64, 16)
    # the grid of the rule is the grid of the network input, for odd sizes too
    for h, w in ((50, 80), (333, 500), (500, 333), (17, 1000), (64, 64)):
        x, _ = explorer.features._input(np.zeros((h, w, 3), np.uint8))
        assert input_geometry((h, w), LONG, 16)[1] == (x.shape[1] // 16, x.shape[2] // 16)
        assert pixel_to_token(w - 1, h - 1, (h, w), LONG, 16) == (x.shape[1] // 16 - 1, x.shape[2] // 16 - 1)
    # a distinctive patch of a 100 x 160 photo: token (1, 2) covers input rows 16..32, columns 32..48, i.e. the
    # photo's rows 40..80 and columns 80..120 after the 0.4 resize
    rgb = np.full((100, 160, 3), 60, np.uint8)
    rgb[40:80, 80:120] = 255
    assert explorer.token_of(100, 60, (100, 160)) == (1, 2)
    assert explorer.token_of(119, 79, (100, 160)) == (1, 2) and explorer.token_of(120, 80, (100, 160)) == (2, 3)
    x, _ = explorer.features._input(rgb)
    blocks = x.mean(0).unfold(0, 16, 16).unfold(1, 16, 16).mean((-1, -2))
    assert tuple(int(i) for i in np.unravel_index(blocks.argmax().item(), blocks.shape)) == (1, 2)


def test_points_are_parsed_strictly():
    assert parse_point('12,3.5') == (12.0, 3.5)
    for bad in ('12', '1,2,3', 'a,b', 'nan,1', ''):
        with pytest.raises(PointError):
            parse_point(bad)
    assert page_to_pixel(200, 100, (200, 100), (50, 100)) == pytest.approx((100 - 1e-3, 50 - 1e-3))
    with pytest.raises(PointError, match='outside the image shown'):
        page_to_pixel(201, 10, (200, 100), (50, 100))


def test_web_click_maps_to_the_same_token(explorer, photo):
    from declip_mm.apis.web_app import RequestError, SegmentationService, make_server
    rgb = np.asarray(Image.open(photo).convert('RGB'))
    H, W = rgb.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='PNG')
    image = 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()
    service = SegmentationService(None, random_weights=True, explorer=lambda: explorer)
    shown = [W / 2, H / 2]                                       # shown at half size on the page
    for click, pixel in (([W / 2 - 0.1, H / 2 - 0.1], (W - 1, H - 1)), ([10.2, 30.7], (20.4, 61.4))):
        answer = service.attention(dict(image=image, click=click, shown=shown))
        assert tuple(answer['token']) == explorer.token_of(*pixel, (H, W))
        assert answer['random_weights'] and answer['figure'].startswith('data:image/png;base64,')
    with pytest.raises(RequestError, match='outside the image shown'):
        service.attention(dict(image=image, click=[W, 3], shown=shown))
    with pytest.raises(RequestError, match='"click" and "shown"'):
        service.attention(dict(image=image, click='1,2', shown=shown))
    # over HTTP, as the page sends it
    import threading
    import urllib.request
    server = make_server(service, '127.0.0.1', 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = urllib.request.Request(f'http://127.0.0.1:{server.server_address[1]}/api/attention',
                                         data=json.dumps(dict(image=image, click=[5, 5], shown=shown)).encode(),
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = json.loads(answer.read())
        assert tuple(data['token']) == explorer.token_of(10, 10, (H, W)) and data['grid'] == list(explorer(
            rgb, [(10, 10)]).grid)
    finally:
        server.shutdown()
        server.server_close()


def test_cli_writes_the_maps_and_refuses_bad_points(photo, tmp_path, capsys):
    W, H = Image.open(photo).size
    out = tmp_path / 'att'
    common = ['--precision', 'fp32', '--long-side', str(LONG), '--device', 'cpu']
    # usage errors before any model: a point outside, a malformed point, missing weights
    assert main(['attention', str(photo), '--points', f'{W},{H - 1}', '--out', str(out), '--random-weights',
                 *common]) == 2
    assert f'outside the {W} x {H} image' in capsys.readouterr().err and not out.exists()
    assert main(['attention', str(photo), '--points', '3;4', '--out', str(out), '--random-weights', *common]) == 2
    assert "X,Y in the image's pixels" in capsys.readouterr().err
    assert main(['attention', str(photo), '--points', '3,4', '--out', str(out), *common]) == 2
    assert '--random-weights' in capsys.readouterr().err and not out.exists()
    config = tmp_path / 'distill.py'
    config.write_text(f'model = dict(vfm_teacher=dict(type="VFMTeacher", **{TINY_VIT!r}))\n')
    assert main(['attention', str(photo), '--points', '3,4', '--out', str(out), '--vfm', str(config),
                 '--backbone', str(tmp_path / 'nothing.pth'), *common]) == 2
    capsys.readouterr()
    from declip_mm.models import DeCLIPViT
    weights = tmp_path / 'tiny.pth'
    DeCLIPViT('DeCLIP-Tiny-ViT-16').save_checkpoint(str(weights))
    assert main(['attention', str(photo), '--points', '3,4', '--out', str(out), '--vfm', str(config),
                 '--backbone', str(weights), *common]) == 2
    assert 'names no VFM weights' in capsys.readouterr().err and not out.exists()
    # the run
    assert main(['attention', str(photo), '--points', '3,4', f'{W - 1},{H - 1}', '--out', str(out),
                 '--random-weights', '--vfm', str(config), *common]) == 0
    err = capsys.readouterr().err
    assert 'RANDOM WEIGHTS' in err
    stem = photo.stem
    data = np.load(out / f'{stem}_attention.npz')
    grid = tuple(data['grid'])
    for name in ('vanilla', 'csa', 'declip', 'dense', 'vfm'):
        assert data[name].shape == (2, *grid)
    assert tuple(data['tokens'][1]) == (grid[0] - 1, grid[1] - 1) and bool(data['random_weights'])
    figure = Image.open(out / f'{stem}_attention.png')
    assert figure.getpixel((figure.width - 2, 1)) == (200, 0, 0)                                   # the red random-weights band
    info = json.loads((out / f'{stem}.json').read_text())
    assert info['random_weights'] and info['tokens'][1] == [grid[0] - 1, grid[1] - 1]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['command'] == 'attention' and summary['settings']['random_weights']
    assert 'min-max' in summary['settings']['colour_scale']
    # a file this tool did not write is never replaced
    other = tmp_path / 'other'
    other.mkdir()
    (other / f'{stem}_attention.png').write_bytes(b'mine')
    assert main(['attention', str(photo), '--points', '3,4', '--out', str(other), '--random-weights', *common]) == 2
    assert (other / f'{stem}_attention.png').read_bytes() == b'mine'
    assert math.isfinite(float(data['vanilla'].sum()))


def test_the_page_click_in_chromium(photo, tmp_path):
    """The page's own click (``/?example=1&click=X,Y`` dispatches it on the shown photo) reaches the same token,
    through the serve command's explorer around the segmenter's tower."""
    import re
    import threading

    from test_web_app import PageParser, open_in_chromium

    class Parser(PageParser):                                    # the dumped DOM, kept whole for the token
        def feed(self, data):
            self.raw = data
            super().feed(data)

    from declip_mm.apis import OpenVocabSegmenter
    from declip_mm.apis.web_app import SegmentationService, make_server, segmenter_explorer
    torch.manual_seed(0)
    segmenter = OpenVocabSegmenter(model_name='DeCLIP-Tiny-ViT-16', device='cpu', precision='fp32')
    service = SegmentationService(segmenter, example_image=str(photo), example_vocabulary='person, car',
                                  random_weights=True, explorer=lambda: segmenter_explorer(segmenter))
    server = make_server(service, '127.0.0.1', 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        W, H = Image.open(photo).size
        shown_w = min(W, 480)                                        # the page shows the photo at most 480 wide
        shown_h = H * shown_w / W
        x, y = 0.7 * shown_w, 0.25 * shown_h
        import test_web_app
        original, test_web_app.PageParser = test_web_app.PageParser, Parser
        try:
            dom, _ = open_in_chromium(f'http://127.0.0.1:{server.server_address[1]}/?example=1&click={x},{y}',
                                      tmp_path)
        finally:
            test_web_app.PageParser = original
    finally:
        server.shutdown()
        server.server_close()
    assert dom.body.get('data-state') == 'done', (dom.body, dom.error)
    token = re.search(r'data-token="(\d+),(\d+)"', dom.raw).groups()
    want = service.explorer.token_of(x * W / shown_w, y * H / shown_h, (H, W))
    assert tuple(int(v) for v in token) == want


def test_sd_panel_completes_the_vfm_affinity(photo, tmp_path):
    """(6) = rows of A_sd @ S_vfm on the square teacher grid, cropped: A_sd from the tiny SD's captured
    self-attention on the distillation's SD view, S_vfm the cosines of the VFM tokens."""
    from tiny_sd import make_tiny_sd

    from declip_mm.datasets.distill_dataset import resize_and_pad
    from declip_mm.models import DiffusionTeacher
    torch.manual_seed(0)
    sd = DiffusionTeacher(str(make_tiny_sd(tmp_path / 'sd')),
                          layers=('up_blocks.1.attentions.*.transformer_blocks.0.attn1',))
    ex = AttentionExplorer('DeCLIP-Tiny-ViT-16', precision='fp32', long_side=LONG, vfm=TINY_VIT, sd=sd, sd_size=64)
    rgb = np.asarray(Image.open(photo).convert('RGB'))
    H, W = rgb.shape[:2]
    maps = ex(rgb, [(W * 0.2, H * 0.8)])
    gh, gw = maps.grid
    side = max(gh, gw)
    with torch.no_grad():
        a_sd = sd(resize_and_pad(Image.fromarray(rgb), 64)[None].float() / 127.5 - 1, (side, side))[0]
    assert torch.allclose(a_sd.sum(-1), torch.ones(side * side), atol=1e-5)
    r, c = maps.tokens[0]
    # S_vfm's rows on the square grid, rebuilt from the VFM panel's definition for every token
    view = resize_and_pad(Image.fromarray(rgb), side * 14)[None].float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    with torch.no_grad():
        g = F.normalize(ex.vfm.model.forward_features((view - mean) / std)[0, 5:], dim=-1)
    want = (a_sd[r * side + c] @ (g @ g.T)).reshape(side, side)[:gh, :gw]
    np.testing.assert_allclose(maps.panels['sd'][0], want.numpy(), atol=1e-5, rtol=0)
    assert list(maps.panels)[-2:] == ['vfm', 'sd']


def test_a_bad_point_is_refused_before_torch_is_imported(photo, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'declip_mm', 'attention', str(photo), '--points',
                           '9999,1', '--random-weights', '--out', str(tmp_path / 'o')], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and 'is outside the' in proc.stderr
    imported = {line.split('|')[-1].strip() for line in proc.stderr.splitlines() if line.startswith('import time:')}
    assert 'torch' not in imported and 'mmengine' not in imported and not (tmp_path / 'o').exists()
