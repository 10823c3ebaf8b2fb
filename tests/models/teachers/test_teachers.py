"""Frozen teachers — DINOv2/DINO from official-format files, Stable Diffusion self-attention."""
import pytest
import torch

from declip_mm.models import DiffusionTeacher, VFMTeacher
from declip_mm.models.teachers import fuse_attention, resize_attention

TINY_VIT = dict(embed_dim=48, depth=2, num_heads=3)


def to_official_dinov2(model) -> dict:
    """timm's DINOv2-reg weights -> the layout of Meta's torch-hub files (inverse of timm's conversion)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    cls_pos = torch.randn(1, 1, sd['pos_embed'].shape[-1])
    out = {k: v for k, v in sd.items() if k not in ('reg_token', 'cls_token', 'pos_embed')}
    out['register_tokens'] = sd['reg_token']
    out['cls_token'] = sd['cls_token'] - cls_pos
    out['pos_embed'] = torch.cat([cls_pos, sd['pos_embed']], dim=1)
    out['mask_token'] = torch.zeros(1, sd['pos_embed'].shape[-1])
    return out


def test_dinov2_reg_loads_official_file_and_returns_patch_tokens(tmp_path):
    torch.manual_seed(0)
    random = VFMTeacher('dinov2_vits14_reg', model_kwargs=TINY_VIT)
    path = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    torch.save(to_official_dinov2(random.model), path)
    torch.manual_seed(1)
    loaded = VFMTeacher('dinov2_vits14_reg', checkpoint=str(path), model_kwargs=TINY_VIT)
    assert loaded.load_report.missing == [] and loaded.load_report.unexpected == []
    x = torch.randn(2, 3, 70, 98)
    tokens = loaded(x)
    assert tokens.shape == (2, 5 * 7, 48)
    torch.testing.assert_close(tokens, random(x), atol=1e-5, rtol=0)
    # CLS and the 4 registers are dropped; the final norm is applied
    full = loaded.model.forward_features(x)
    torch.testing.assert_close(tokens, full[:, 5:], atol=0, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.training


def test_dino_v1_and_key_report(tmp_path):
    torch.manual_seed(0)
    teacher = VFMTeacher('dino_vitb16', model_kwargs=TINY_VIT)
    sd = dict(teacher.model.state_dict())
    path = tmp_path / 'dino.pth'
    torch.save(sd, path)
    loaded = VFMTeacher('dino_vitb16', checkpoint=str(path), model_kwargs=TINY_VIT)
    x = torch.randn(1, 3, 64, 48)
    torch.testing.assert_close(loaded(x), teacher(x), atol=1e-5, rtol=0)
    assert loaded(x).shape == (1, 12, 48)
    del sd['blocks.1.norm1.weight']
    torch.save(sd, path)
    with pytest.raises(KeyError, match=r'1 missing keys \[blocks\.1\.norm1\.weight\]'):
        VFMTeacher('dino_vitb16', checkpoint=str(path), model_kwargs=TINY_VIT)
    with pytest.raises(ValueError, match="unknown VFM teacher 'dinov3'"):
        VFMTeacher('dinov3')
    with pytest.raises(ValueError, match='not a multiple of its patch size 16'):
        teacher(torch.randn(1, 3, 60, 64))


def test_bf16_teacher_is_close_to_fp32():
    torch.manual_seed(0)
    fp32 = VFMTeacher('dinov2_vits14_reg', model_kwargs=TINY_VIT)
    bf16 = VFMTeacher('dinov2_vits14_reg', model_kwargs=TINY_VIT, dtype='bf16')
    bf16.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in fp32.model.state_dict().items()})
    x = torch.randn(1, 3, 56, 56)
    cos = torch.nn.functional.cosine_similarity(bf16(x), fp32(x), dim=-1)
    assert bf16(x).dtype == torch.float32 and cos.min() > 0.99


@pytest.fixture(scope='module')
def tiny_sd_folder(tmp_path_factory):
    from tiny_sd import make_tiny_sd
    return make_tiny_sd(tmp_path_factory.mktemp('tiny_sd'))


LAYERS = ('down_blocks.0.attentions.*.transformer_blocks.0.attn1', 'up_blocks.1.attentions.*.transformer_blocks.0.attn1')


@pytest.mark.slow
def test_sd_self_attention_capture_matches_manual(tiny_sd_folder):
    teacher = DiffusionTeacher(str(tiny_sd_folder), timestep=50, layers=LAYERS)
    assert teacher.layer_names == ['down_blocks.0.attentions.0.transformer_blocks.0.attn1',
                                   'up_blocks.1.attentions.0.transformer_blocks.0.attn1',
                                   'up_blocks.1.attentions.1.transformer_blocks.0.attn1']
    inputs = {}
    hooks = [teacher.unet.get_submodule(n).register_forward_pre_hook(
        lambda m, args, kwargs, n=n: inputs.__setitem__(n, args[0] if args else kwargs['hidden_states']),
        with_kwargs=True) for n in teacher.layer_names]
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    fused = teacher(images, grid=(4, 6))
    for h in hooks:
        h.remove()
    for name in teacher.layer_names:
        attn = teacher.unet.get_submodule(name)
        hs = inputs[name]
        q = attn.to_q(hs).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
        k = attn.to_k(hs).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
        manual = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1).mean(dim=1)
        torch.testing.assert_close(teacher._store[name], manual, atol=1e-5, rtol=0)
    maps = [resize_attention(teacher._store[n], (4, 6)) for n in teacher.layer_names]
    torch.testing.assert_close(fused, maps[0] @ maps[1] @ maps[2], atol=1e-6, rtol=0)
    assert fused.shape == (2, 24, 24) and (fused >= 0).all()
    torch.testing.assert_close(fused.sum(-1), torch.ones(2, 24), atol=1e-5, rtol=0)
    # deterministic per image (fixed noise seed): same target twice, and per image independent of the batch
    torch.testing.assert_close(teacher(images[1:], grid=(4, 6))[0], fused[1], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_sd_capture_does_not_change_the_unet(tiny_sd_folder):
    from diffusers import UNet2DConditionModel
    teacher = DiffusionTeacher(str(tiny_sd_folder), layers=LAYERS)
    plain = UNet2DConditionModel.from_pretrained(tiny_sd_folder, subfolder='unet')
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(teacher.unet(x, t, encoder_hidden_states=teacher.empty_prompt).sample,
                                   plain(x, t, encoder_hidden_states=teacher.empty_prompt).sample, atol=1e-5, rtol=0)


def test_sd_errors(tmp_path, tiny_sd_folder):
    with pytest.raises(FileNotFoundError, match=r"lacks \['unet', 'vae', 'scheduler', 'tokenizer', 'text_encoder'\]"):
        DiffusionTeacher(str(tmp_path))
    with pytest.raises(ValueError, match="no self-attention layer matches 'mid_block.nothing'"):
        DiffusionTeacher(str(tiny_sd_folder), layers=('mid_block.nothing',))
    with pytest.raises(ValueError, match='timestep 5000 outside'):
        DiffusionTeacher(str(tiny_sd_folder), timestep=5000)


def test_resize_and_fuse_keep_rows_stochastic():
    a = torch.softmax(torch.randn(2, 16, 16), dim=-1)
    r = resize_attention(a, (3, 5))
    assert r.shape == (2, 15, 15)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 15))
    eye = torch.eye(16).expand(1, 16, 16)
    torch.testing.assert_close(resize_attention(eye, (4, 4)), torch.eye(16)[None])   # same grid: unchanged
    torch.testing.assert_close(fuse_attention([r, r]), r @ r)
    with pytest.raises(ValueError, match='square grid'):
        resize_attention(torch.rand(1, 15, 15), (3, 5))


def test_sam_image_encoder_loads_official_file(tmp_path):
    tiny_sam = dict(embed_dim=48, depth=2, num_heads=3, global_attn_indexes=[1], window_size=4, neck_chans=32,
                    img_size=64)
    torch.manual_seed(0)
    random = VFMTeacher('sam_vitb', model_kwargs=tiny_sam)
    official = {f"image_encoder.{k.replace('mlp.fc', 'mlp.lin')}": v for k, v in random.model.state_dict().items()}
    official['mask_decoder.iou_token.weight'] = torch.zeros(1, 8)        # SAM's decoder: not the image encoder
    torch.save(official, tmp_path / 'sam_vit_b.pth')
    loaded = VFMTeacher('sam_vitb', checkpoint=str(tmp_path / 'sam_vit_b.pth'), model_kwargs=tiny_sam)
    x = torch.randn(1, 3, 80, 96)
    tokens = loaded(x)
    assert loaded.embed_dim == 32 and tokens.shape == (1, 5 * 6, 32)
    torch.testing.assert_close(tokens, random(x), atol=1e-5, rtol=0)


def test_dinov2_position_table_is_resized_the_official_way():
    """DINOv2 without registers (and DINO): bicubic, scale factor (n + 0.1) / M, no antialiasing, CLS position
    untouched (the register models' rule is tested against the hub code in the reference-marked tests)."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    teacher = VFMTeacher('dinov2_vits14', model_kwargs=dict(TINY_VIT, img_size=98))       # 7 x 7 source grid
    source = teacher.model.pos_embed.detach().clone()                                      # (1, 1 + 49, 48)
    teacher(torch.randn(1, 3, 70, 98))                                                     # grid 5 x 7
    table = source[:, 1:].reshape(1, 7, 7, 48).permute(0, 3, 1, 2)
    want = F.interpolate(table, scale_factor=(5.1 / 7, 7.1 / 7), mode='bicubic', align_corners=False)
    torch.testing.assert_close(teacher.model.pos_embed[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 35, 48),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(teacher.model.pos_embed[:, :1], source[:, :1], rtol=0, atol=0)
    teacher(torch.randn(1, 3, 98, 98))                                                     # back to the source grid
    torch.testing.assert_close(teacher.model.pos_embed, source, rtol=0, atol=0)
