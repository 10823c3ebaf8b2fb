"""Stable Diffusion self-attention teacher (journal DeCLIP, docs/method.md section 2).

One noised UNet pass with an empty prompt; the self-attention probabilities of chosen layers are captured
through diffusers attention processors, averaged over heads, resized to the student token grid (query and
key dimensions) with rows re-normalised, and fused across layers by matrix product: A_sd = A_1 A_2 ... A_L
(rows stay stochastic). Loaded with diffusers from a local folder in the v1.5 / v2.1 layout::

    <folder>/unet  <folder>/vae  <folder>/scheduler  <folder>/tokenizer  <folder>/text_encoder
"""
import fnmatch
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from .vfm import DTYPES

SD_LAYOUT = ('unet', 'vae', 'scheduler', 'tokenizer', 'text_encoder')


class CapturingAttnProcessor:
    """diffusers' plain ``AttnProcessor`` that also stores the head-averaged probabilities (B, N, N)."""

    def __init__(self, name: str, store: Dict[str, torch.Tensor]):
        from diffusers.models.attention_processor import AttnProcessor
        self.name, self.store, self.inner = name, store, AttnProcessor()

    def __call__(self, attn, hidden_states, *args, **kwargs):
        original = attn.get_attention_scores

        def capture(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)
            self.store[self.name] = probs.unflatten(0, (-1, attn.heads)).float().mean(dim=1)
            return probs

        attn.get_attention_scores = capture
        try:
            return self.inner(attn, hidden_states, *args, **kwargs)
        finally:
            del attn.get_attention_scores


def resize_attention(attn: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(B, n, n) attention over a square-ish token grid -> (B, h*w, h*w) on ``grid``, rows summing to 1.

    Both the query and the key spatial dimensions are resized bilinearly.
    """
    B, n, _ = attn.shape
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f'cannot infer a square grid from {n} attention tokens')
    h, w = grid
    # keys: (B*n, 1, side, side) -> (B*n, 1, h, w)
    x = F.interpolate(attn.reshape(B * n, 1, side, side), size=grid, mode='bilinear', align_corners=False)
    x = x.reshape(B, side, side, h * w).permute(0, 3, 1, 2)                      # (B, h*w, side, side) queries
    x = F.interpolate(x, size=grid, mode='bilinear', align_corners=False)       # (B, h*w, h, w)
    x = x.flatten(2).transpose(1, 2).clamp_min(0)                               # (B, h*w queries, h*w keys)
    return x / x.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def fuse_attention(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """A_1 @ A_2 @ ... @ A_L for (B, N, N) row-stochastic maps."""
    fused = maps[0]
    for a in maps[1:]:
        fused = fused @ a
    return fused


@MODELS.register_module()
class DiffusionTeacher(nn.Module):
    """Frozen Stable Diffusion giving fused self-attention A_sd (B, h*w, h*w) for a target token grid (h, w).

    Args:
        folder (str): local diffusers folder (v1.5 or v2.1 layout, see module docstring).
        timestep (int): the noising timestep of the single UNet pass, in [0, the scheduler's
            ``num_train_timesteps``). Defaults to 100.
        layers (Sequence[str]): fnmatch patterns of self-attention module names (``...attn1``) to capture, in
            fusion order (names matching one pattern in sorted order).
            Defaults to ``('up_blocks.1.attentions.*.transformer_blocks.0.attn1',)``.
        dtype (str): 'fp32', 'bf16' or 'fp16' for the UNet and VAE. Defaults to 'fp32'.
        noise_seed (int): seed of the noise (the same for every image, so targets are deterministic per image).
            Defaults to 0.
    """

    def __init__(self, folder: str, timestep: int = 100,
                 layers: Sequence[str] = ('up_blocks.1.attentions.*.transformer_blocks.0.attn1',),
                 dtype: str = 'fp32', noise_seed: int = 0):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        folder = Path(folder).expanduser()
        missing = [sub for sub in SD_LAYOUT if not (folder / sub).is_dir()]
        if missing:
            raise FileNotFoundError(f'Stable Diffusion folder {folder} lacks {missing}; expected the diffusers layout '
                                    f'{list(SD_LAYOUT)} (v1.5 or v2.1)')
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got '{dtype}'")
        self.dtype = DTYPES[dtype]
        kw = dict(local_files_only=True)
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet', torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder='vae', torch_dtype=self.dtype, **kw)
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder='scheduler', **kw)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder='tokenizer', **kw)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder='text_encoder', **kw)
        with torch.no_grad():
            tokens = tokenizer([''], padding='max_length', max_length=tokenizer.model_max_length, return_tensors='pt')
            self.register_buffer('empty_prompt', text_encoder(tokens.input_ids)[0].to(self.dtype), persistent=False)
        del text_encoder
        if not 0 <= timestep < self.scheduler.config.num_train_timesteps:
            raise ValueError(f'timestep {timestep} outside [0, {self.scheduler.config.num_train_timesteps})')
        self.timestep = timestep
        self.noise_seed = noise_seed

        self._store: Dict[str, torch.Tensor] = {}
        processors = dict(self.unet.attn_processors)
        self.layer_names = []
        for pattern in layers:
            matched = sorted(n[:-len('.processor')] for n in processors
                             if fnmatch.fnmatch(n[:-len('.processor')], pattern) and '.attn1' in n)
            if not matched:
                attn1 = sorted(n[:-len('.processor')] for n in processors if '.attn1' in n)
                raise ValueError(f"no self-attention layer matches '{pattern}'; layers: {attn1}")
            self.layer_names += [m for m in matched if m not in self.layer_names]
        for name in self.layer_names:
            processors[f'{name}.processor'] = CapturingAttnProcessor(name, self._store)
        self.unet.set_attn_processor(processors)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """Always in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """images (B, 3, H, W) scaled to [-1, 1], H and W multiples of 8 -> A_sd (B, h*w, h*w) on ``grid``."""
        images = images.to(self.dtype)
        latents = self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor
        generator = torch.Generator(device='cpu').manual_seed(self.noise_seed)
        noise = torch.randn(latents.shape[1:], generator=generator).to(latents).expand_as(latents)
        t = torch.full((latents.shape[0],), self.timestep, dtype=torch.long, device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        self._store.clear()
        self.unet(noisy, t, encoder_hidden_states=self.empty_prompt.expand(latents.shape[0], -1, -1))
        maps = [resize_attention(self._store[name], grid) for name in self.layer_names]
        return fuse_attention(maps)
