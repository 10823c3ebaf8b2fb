"""The context diagnostics on hand-made inputs and a tiny random backbone."""
import torch
import torch.nn.functional as F

from projects.proof_world.proof_world.diagnostics import (decoupled_attention, segment_attention_mass,
                                                          thing_box_confusion)
from projects.proof_world.proof_world.world import NUM_STUFF


def test_segment_attention_mass_per_query_kind():
    labels = torch.tensor([[0, 0, NUM_STUFF, NUM_STUFF]])
    attention = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.9, 0.0, 0.1, 0.0],
                               [0.2, 0.2, 0.3, 0.3], [0.0, 0.0, 0.0, 1.0]]])
    got = segment_attention_mass(attention, labels)
    assert abs(got['stuff_own_segment'] - (1.0 + 0.9) / 2) < 1e-6
    assert abs(got['thing_own_segment'] - (0.6 + 1.0) / 2) < 1e-6


def test_decoupled_attention_is_the_csa_softmax_pair():
    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    torch.manual_seed(0)
    backbone = DeCLIPViT(model_name='DeCLIP-Tiny-ViT-16', mode='csa').eval()
    x = torch.randn(2, 3, 64, 64)
    attention = decoupled_attention(backbone, x)
    q, k = backbone.forward_features(x, out_indices=()).context
    h, s = backbone.num_heads, backbone.attn_scale

    def per_head(t):
        t = t.view(2, 16, h, -1).transpose(1, 2)
        return torch.softmax(s * t @ t.transpose(-1, -2), -1).mean(1)
    torch.testing.assert_close(attention, (per_head(q) + per_head(k)) / 2)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 16))


def test_thing_boxes_taken_for_stuff_are_counted():
    text = F.one_hot(torch.arange(NUM_STUFF + 2), NUM_STUFF + 2).float()       # class c = axis c
    dense = torch.zeros(1, NUM_STUFF + 2, 4, 4)
    dense[0, NUM_STUFF, :2, :2] = 1.0                                            # thing A: its own class
    dense[0, NUM_STUFF + 1, 2:, 2:] = 1.0                                        # thing B: a little of itself ...
    dense[0, 0, 2:, 2:] = 2.0                                                    # ... more of stuff 0
    got = thing_box_confusion(dense, text, [[[0, 0, 16, 16], [16, 16, 32, 32]]], [[NUM_STUFF, NUM_STUFF + 1]], 8)
    assert got == dict(top1_all=50.0, top1_things_only=100.0, predicted_stuff=50.0, boxes=2)
