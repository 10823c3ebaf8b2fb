"""Diffusion self-attention teacher (journal DeCLIP, docs/method.md section 2).

One noised UNet pass; the self-attention probabilities of chosen layers are captured through diffusers attention
processors, averaged over heads, resized to the student token grid (query and key dimensions) with rows
re-normalised, and fused across layers by matrix product: A_sd = A_1 A_2 ... A_L (rows stay stochastic).
Loaded with diffusers from a local folder in one of two layouts, told apart by ``unet/config.json``'s
``_class_name``:

* Stable Diffusion v1.5 / v2.1 (``UNet2DConditionModel``): the VAE latents are noised, the UNet is conditioned on
  the empty prompt, and the self-attention layers are the ``...attn1`` modules::

    <folder>/unet  <folder>/vae  <folder>/scheduler  <folder>/tokenizer  <folder>/text_encoder

* pixel-space unconditional DDPM (``UNet2DModel`` with attention blocks): the image itself is noised, no prompt;
  every attention layer is a self-attention layer::

    <folder>/unet  <folder>/scheduler
"""
import fnmatch
import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from .vfm import DTYPES

SD_LAYOUT = ('unet', 'vae', 'scheduler', 'tokenizer', 'text_encoder')
PIXEL_LAYOUT = ('unet', 'scheduler')
PIXEL_UNET = 'UNet2DModel'


class CapturingAttnProcessor:
    """diffusers' plain ``AttnProcessor`` that also stores the head-averaged probabilities (B, N, N)."""

    def __init__(self, name: str, store: Dict[str, torch.Tensor]):
        from diffusers.models.attention_processor import AttnProcessor
        self.name, self.store, self.inner = name, store, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        # named like AttnProcessor's own arguments: diffusers drops the keyword arguments a processor does not name
        original = attn.get_attention_scores

        def capture(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)
            self.store[self.name] = probs.unflatten(0, (-1, attn.heads)).float().mean(dim=1)
            return probs

        attn.get_attention_scores = capture
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
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


def unet_class_name(folder: Path) -> str:
    """``_class_name`` of ``<folder>/unet/config.json`` ('' when there is none)."""
    config = folder / 'unet' / 'config.json'
    return json.loads(config.read_text()).get('_class_name', '') if config.is_file() else ''


def self_attention_layers(unet: nn.Module, is_self_attention: Callable[[str], bool]) -> List[str]:
    """Sorted names of the UNet's diffusers ``Attention`` modules that ``is_self_attention`` keeps."""
    from diffusers.models.attention_processor import Attention
    return sorted(name for name, module in unet.named_modules()
                  if isinstance(module, Attention) and is_self_attention(name))


@MODELS.register_module()
class DiffusionTeacher(nn.Module):
    """Frozen diffusion UNet giving fused self-attention A_sd (B, h*w, h*w) for a target token grid (h, w).

    Args:
        folder (str): local diffusers folder, Stable Diffusion (v1.5 / v2.1) or pixel-space ``UNet2DModel``
            layout (see the module docstring).
        timestep (int): the noising timestep of the single UNet pass, in [0, the scheduler's
            ``num_train_timesteps``). Defaults to 100.
        layers (Sequence[str]): fnmatch patterns of self-attention module names (SD: ``...attn1``; pixel UNet:
            any attention, e.g. ``up_blocks.1.attentions.*``) to capture, in fusion order (names matching one
            pattern in sorted order). Defaults to ``('up_blocks.1.attentions.*.transformer_blocks.0.attn1',)``.
        dtype (str): 'fp32', 'bf16' or 'fp16' for the UNet and VAE. Defaults to 'fp32'.
        noise_seed (int): seed of the noise (the same for every image, so targets are deterministic per image).
            Defaults to 0.
    """

    def __init__(self, folder: str, timestep: int = 100,
                 layers: Sequence[str] = ('up_blocks.1.attentions.*.transformer_blocks.0.attn1',),
                 dtype: str = 'fp32', noise_seed: int = 0):
        super().__init__()
        from diffusers import DDPMScheduler
        folder = Path(folder).expanduser()
        self.pixel_space = unet_class_name(folder) == PIXEL_UNET
        layout = PIXEL_LAYOUT if self.pixel_space else SD_LAYOUT
        missing = [sub for sub in layout if not (folder / sub).is_dir()]
        if missing and self.pixel_space:
            raise FileNotFoundError(f'pixel-space diffusion folder {folder} lacks {missing}; expected the diffusers '
                                    f'layout {list(PIXEL_LAYOUT)} ({PIXEL_UNET} + DDPMScheduler)')
        if missing:
            raise FileNotFoundError(f'Stable Diffusion folder {folder} lacks {missing}; expected the diffusers layout '
                                    f'{list(SD_LAYOUT)} (v1.5 or v2.1), or {list(PIXEL_LAYOUT)} with a '
                                    f'{PIXEL_UNET} in unet/ (pixel space)')
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got '{dtype}'")
        self.dtype = DTYPES[dtype]
        kw = dict(local_files_only=True)
        if self.pixel_space:
            from diffusers import UNet2DModel
            self.unet = UNet2DModel.from_pretrained(folder, subfolder='unet', torch_dtype=self.dtype, **kw)
            self.vae = None
        else:
            self._load_stable_diffusion(folder, kw)
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder='scheduler', **kw)
        if not 0 <= timestep < self.scheduler.config.num_train_timesteps:
            raise ValueError(f'timestep {timestep} outside [0, {self.scheduler.config.num_train_timesteps})')
        self.timestep = timestep
        self.noise_seed = noise_seed

        self._store: Dict[str, torch.Tensor] = {}
        candidates = self_attention_layers(self.unet, (lambda name: True) if self.pixel_space else
                                           (lambda name: name.endswith('.attn1')))
        self.layer_names = []
        for pattern in layers:
            matched = [name for name in candidates if fnmatch.fnmatch(name, pattern)]
            if not matched:
                raise ValueError(f"no self-attention layer matches '{pattern}'; layers: {candidates}")
            self.layer_names += [m for m in matched if m not in self.layer_names]
        for name in self.layer_names:
            self.unet.get_submodule(name).set_processor(CapturingAttnProcessor(name, self._store))
        self.requires_grad_(False)
        self.eval()

    def _load_stable_diffusion(self, folder: Path, kw: Dict) -> None:
        """The SD UNet, the VAE and the empty-prompt embedding (the text encoder is dropped after one pass)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet', torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder='vae', torch_dtype=self.dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder='tokenizer', **kw)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder='text_encoder', **kw)
        with torch.no_grad():
            tokens = tokenizer([''], padding='max_length', max_length=tokenizer.model_max_length, return_tensors='pt')
            self.register_buffer('empty_prompt', text_encoder(tokens.input_ids)[0].to(self.dtype), persistent=False)

    def train(self, mode: bool = True):
        """Always in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """images (B, 3, H, W) scaled to [-1, 1] -> A_sd (B, h*w, h*w) on ``grid``.

        H and W: multiples of 8 for SD; for a pixel UNet, multiples of 2 ** (its number of down blocks - 1)
        (its training size, e.g. ``unet.config.sample_size``, gives the attention it learned).
        """
        images = images.to(self.dtype)
        if self.pixel_space:
            clean = images
        else:
            clean = self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor
        generator = torch.Generator(device='cpu').manual_seed(self.noise_seed)
        noise = torch.randn(clean.shape[1:], generator=generator).to(clean).expand_as(clean)
        t = torch.full((clean.shape[0],), self.timestep, dtype=torch.long, device=clean.device)
        noisy = self.scheduler.add_noise(clean, noise, t)
        self._store.clear()
        if self.pixel_space:
            self.unet(noisy, t)
        else:
            self.unet(noisy, t, encoder_hidden_states=self.empty_prompt.expand(clean.shape[0], -1, -1))
        maps = [resize_attention(self._store[name], grid) for name in self.layer_names]
        return fuse_attention(maps)
