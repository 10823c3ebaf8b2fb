"""DiffusionTeacher on a pixel-space unconditional diffusers folder (UNet2DModel + DDPMScheduler, no VAE/prompt)."""
import pytest
import torch

from declip_mm.models import DiffusionTeacher
from declip_mm.models.teachers import fuse_attention, resize_attention

LAYERS = ('up_blocks.0.attentions.*', 'mid_block.attentions.*')


def tiny_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
                       up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=4, norm_num_groups=4)


@pytest.fixture(scope='module')
def pixel_folder(tmp_path_factory):
    from diffusers import DDPMScheduler
    folder = tmp_path_factory.mktemp('pixel_ddpm')
    torch.manual_seed(0)
    tiny_unet().save_pretrained(folder / 'unet')
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / 'scheduler')
    return folder


def manual_probabilities(attn, hidden_states):
    """softmax(q k^T * scale) averaged over heads, from the Attention module's own norm and projections."""
    x = hidden_states.flatten(2).transpose(1, 2)                                     # (B, HW, C)
    x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    q = attn.to_q(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    k = attn.to_k(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1).mean(dim=1)


def test_pixel_unet_attention_matches_an_independent_pass(pixel_folder):
    from diffusers import DDPMScheduler, UNet2DModel
    teacher = DiffusionTeacher(str(pixel_folder), timestep=200, layers=LAYERS, noise_seed=3)
    assert teacher.pixel_space and teacher.vae is None
    assert teacher.layer_names == ['up_blocks.0.attentions.0', 'up_blocks.0.attentions.1', 'mid_block.attentions.0']
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    fused = teacher(images, grid=(4, 6))

    # the same pass by hand: plain UNet (diffusers' default processors), noise from the seed, probabilities from hooks
    plain = UNet2DModel.from_pretrained(pixel_folder, subfolder='unet').eval()
    scheduler = DDPMScheduler.from_pretrained(pixel_folder, subfolder='scheduler')
    noise = torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(3)).expand_as(images)
    t = torch.tensor([200, 200])
    probs = {}
    hooks = [plain.get_submodule(n).register_forward_pre_hook(
        lambda m, args, kwargs, n=n: probs.__setitem__(n, manual_probabilities(m, args[0] if args else
                                                                               kwargs['hidden_states'])),
        with_kwargs=True) for n in teacher.layer_names]
    with torch.no_grad():
        plain(scheduler.add_noise(images, noise, t), t)
    for h in hooks:
        h.remove()
    assert probs['mid_block.attentions.0'].shape == (2, 64, 64)       # 8 x 8 tokens at the coarse level
    maps = [resize_attention(probs[n], (4, 6)) for n in teacher.layer_names]
    torch.testing.assert_close(fused, fuse_attention(maps), atol=1e-5, rtol=0)
    assert fused.shape == (2, 24, 24) and (fused >= 0).all()
    torch.testing.assert_close(fused.sum(-1), torch.ones(2, 24), atol=1e-5, rtol=0)
    torch.testing.assert_close(teacher(images[1:], grid=(4, 6))[0], fused[1], atol=1e-5, rtol=0)


def test_every_attention_of_a_pixel_unet_is_self_attention(pixel_folder):
    teacher = DiffusionTeacher(str(pixel_folder), layers=('*',))
    assert teacher.layer_names == ['down_blocks.1.attentions.0', 'mid_block.attentions.0',
                                   'up_blocks.0.attentions.0', 'up_blocks.0.attentions.1']


def test_capture_does_not_change_the_pixel_unet(pixel_folder):
    from diffusers import UNet2DModel
    teacher = DiffusionTeacher(str(pixel_folder), layers=('*',))
    plain = UNet2DModel.from_pretrained(pixel_folder, subfolder='unet')
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(teacher.unet(x, t).sample, plain(x, t).sample, atol=1e-5, rtol=0)


def test_pixel_unet_errors(tmp_path, pixel_folder):
    with pytest.raises(FileNotFoundError, match=r"lacks \['unet', 'vae', .*\['unet', 'scheduler'\] with a UNet2DModel"):
        DiffusionTeacher(str(tmp_path))
    tiny_unet().save_pretrained(tmp_path / 'unet')
    with pytest.raises(FileNotFoundError, match=r"pixel-space diffusion folder .* lacks \['scheduler'\]"):
        DiffusionTeacher(str(tmp_path))
    with pytest.raises(ValueError, match=r"no self-attention layer matches 'up_blocks.1.attentions.\*'; "
                                         r"layers: \['down_blocks.1.attentions.0', 'mid_block.attentions.0'"):
        DiffusionTeacher(str(pixel_folder), layers=('up_blocks.1.attentions.*',))
    with pytest.raises(ValueError, match=r'timestep 1000 outside \[0, 1000\)'):
        DiffusionTeacher(str(pixel_folder), timestep=1000)
