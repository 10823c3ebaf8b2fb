"""Attention concentration per block (projects/proof_world/proof_world/attention_stats.py) on a tiny random tower."""
import math

import pytest
import torch
import torch.nn.functional as F

import projects.proof_world.proof_world  # noqa: F401  (registers the proof's open_clip model configs)
from projects.proof_world.proof_world.attention_stats import (attention_concentration, block_attentions,
                                                              concentration_stats, neighbourhood_mask,
                                                              uniform_reference)


@pytest.fixture(scope='module')
def tower():
    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    torch.manual_seed(0)
    return DeCLIPViT('DeCLIP-Proof-Test-ViT-8', trainable='none').eval()


def test_attention_rows_match_the_block_weights(tower):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 48)                           # a 4 x 6 grid: rows and columns not symmetric
    attns, grid = block_attentions(tower, images)
    assert grid == (4, 6) and len(attns) == tower.depth
    visual = tower.visual
    # independent forward: open_clip's own stem and first block, q / k from the block's fused in_proj weights
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], 1)
    pos = visual.positional_embedding                            # 4 x 4 at 32 px: interpolated as the tower does
    from declip_mm.models.backbones.vision_towers import interpolate_pos_embed
    x = visual.ln_pre(x + interpolate_pos_embed(pos, (4, 4), (4, 6)))
    block = visual.transformer.resblocks[1]
    with torch.no_grad():
        x = visual.transformer.resblocks[0](x)
        x_n = F.layer_norm(x, (x.shape[-1],), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
        c, heads = x.shape[-1], block.attn.num_heads
        q = (x_n @ w[:c].T + b[:c]).reshape(2, -1, heads, c // heads).transpose(1, 2)
        k = (x_n @ w[c:2 * c].T + b[c:2 * c]).reshape(2, -1, heads, c // heads).transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), -1)
        # and the block's own attention weights (nn.MultiheadAttention, per head)
        _, own = block.attn(x_n, x_n, x_n, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(attns[1], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attns[1], own, atol=1e-5, rtol=1e-4)


def test_statistics_are_bounded_on_a_random_tower(tower):
    torch.manual_seed(2)
    stats = attention_concentration(tower, torch.randn(3, 3, 32, 32), top_k=(1, 4), batch_size=2)
    assert len(stats) == tower.depth
    for block in stats:
        assert set(block) == {'entropy', 'cls', 'local', 'top1', 'top4'}
        assert 0 <= block['entropy'] <= 1 + 1e-6
        assert all(0 <= block[name] <= 1 + 1e-6 for name in ('cls', 'local', 'top1', 'top4'))
        assert block['top1'] <= block['top4']
    # also from the bare open_clip tower
    assert attention_concentration(tower.visual, torch.randn(1, 3, 32, 32))[0].keys() == stats[0].keys()


def test_hand_made_attentions():
    grid, n = (3, 4), 13
    one_key = torch.zeros(2, 2, n, n)
    one_key[..., 5] = 1                                          # every query attends patch key 5 only
    stats = concentration_stats(one_key, grid, top_k=(1, 2))
    for value, expected in ((stats['top1'], 1.0), (stats['top2'], 1.0), (stats['entropy'], 0.0),
                            (stats['cls'], 0.0)):
        torch.testing.assert_close(value, torch.full((2,), expected))
    # key 5 is patch (1, 0): its 3 x 3 neighbourhood holds the queries of rows 0-2, columns 0-1
    near = neighbourhood_mask(grid)[:, 4].float().mean()
    torch.testing.assert_close(stats['local'], torch.full((2,), float(near)))

    uniform = torch.full((1, 1, n, n), 1 / n)
    stats = concentration_stats(uniform, grid, top_k=(1, 4))
    for name, value in uniform_reference(grid, (1, 4)).items():
        torch.testing.assert_close(stats[name], torch.tensor([value]))

    itself = torch.eye(n)[None, None]                            # each query attends itself: local, not proxy
    stats = concentration_stats(itself, grid, top_k=1)
    torch.testing.assert_close(stats['local'], torch.ones(1))
    torch.testing.assert_close(stats['top1'], torch.tensor([1 / 12]))
    torch.testing.assert_close(stats['entropy'], torch.zeros(1))

    on_cls = torch.zeros(1, 3, n, n)
    on_cls[..., 0] = 1
    stats = concentration_stats(on_cls, grid, top_k=1, head_mean=True)
    torch.testing.assert_close(stats['cls'], torch.ones(1))
    torch.testing.assert_close(stats['top1'], torch.zeros(1))
