"""DeCLIPViT: an open_clip image tower whose last block is decoupled (docs/method.md section 1).

All blocks but the last run unchanged; the last one runs in one of five modes:

==========  ==================================================================================
'csa'       softmax(s q q^T) + softmax(s k k^T) attention, no residual, no MLP (DeCLIP default)
'qq'        softmax(s q q^T) (the other decoupled variant; 'kk' likewise)
'vanilla'   the unmodified block: plain CLIP patch tokens
'maskclip'  value path only (v -> OutProj) with residual and MLP, as MaskCLIP / CLIPSelf
==========  ==================================================================================

The dense map is Proj(LN_post(tokens)) of the last block's patch tokens, in the joint image-text space.
Context features (what DeCLIP distils from a vision foundation model) are the last block's q (and k),
with bias, before scaling. The decoupled attention itself is in ``decoupled_attention.py``.
"""
import logging
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ...registry import MODELS
from ..clip_factory import create_clip, resolve_pretrained
from .checkpoints import DECLIP_VIT, load_into, read_checkpoint
from .decoupled_attention import DECOUPLED_MODES, decoupled_block, maskclip_block
from .vision_towers import make_view

MODES = DECOUPLED_MODES + ('vanilla', 'maskclip')
TRAINABLE = ('blocks', 'all', 'none')
CHECKPOINT_FORMAT = 'declip_mm.DeCLIPViT/1'
INV_SQRT_HEAD_DIM = '1/sqrt(d)'   # attn_scale value naming the papers' softmax scale, whatever the head width

Context = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class DeCLIPFeatures(NamedTuple):
    """Everything one pass of the image tower gives.

    dense: (B, D, H, W) joint-space map, not normalised.
    context: (B, H*W, C) context tokens, a (q, k) pair for 'csa'; None for 'vanilla' / 'maskclip'.
    intermediates: (B, C, H, W) maps at ``out_indices`` (the last index gives the last block's output).
    """
    dense: torch.Tensor
    context: Optional[Context]
    intermediates: List[torch.Tensor]


def pool_regions(dense: torch.Tensor, boxes: Sequence[torch.Tensor], patch_size: int, output_size: int = 1,
                 box_units: str = 'pixels', normalize: bool = True) -> List[torch.Tensor]:
    """:meth:`DeCLIPViT.extract_regions` of a raw dense map (B, D, h, w) of a tower with ``patch_size``: mmcv's
    RoIAlign (aligned, adaptive sampling) of per-image (n_i, 4) xyxy boxes -> per image (n_i, D) or (n_i, N*N, D)."""
    from mmcv.ops import roi_align
    if len(boxes) != dense.shape[0]:
        raise ValueError(f'got boxes for {len(boxes)} images but a batch of {dense.shape[0]}')
    if box_units not in ('pixels', 'tokens'):
        raise ValueError(f"box_units must be 'pixels' or 'tokens', got '{box_units}'")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[-1] != 4:
            raise ValueError(f'boxes[{i}] must be (n, 4) xyxy, got {tuple(b.shape)}')
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
    scale = 1.0 / patch_size if box_units == 'pixels' else 1.0
    # mmcv's kernels index raw memory: the map must be contiguous
    cells = roi_align(dense.float().contiguous(), rois.float().to(dense.device), (output_size, output_size),
                      scale, 0, 'avg', True)
    cells = cells.flatten(2).transpose(1, 2).to(dense.dtype)          # (K, N*N, D)
    if normalize:
        cells = F.normalize(cells, dim=-1)
    if output_size == 1:
        cells = cells[:, 0]
    return list(cells.split([len(b) for b in boxes]))


@MODELS.register_module()
class DeCLIPViT(BaseModule):
    """CLIP ViT (OpenAI/OpenCLIP or EVA02 family) with DeCLIP's decoupled last block.

    Args:
        model_name (str): any open_clip ViT name (``'ViT-B-16'``, ``'ViT-L-14-336'``, ``'EVA02-B-16'``,
            ``'EVA02-L-14-336'``, ...) or a tiny preset (``'DeCLIP-Tiny-ViT-16'``, ``'DeCLIP-Tiny-EVA02-16'``).
            Defaults to ``'EVA02-B-16'``.
        pretrained (str, optional): None (random init), an open_clip tag resolved offline, a weights file or folder
            (open_clip or the authors' EVA-CLIP/DeCLIP format), or a DeCLIPViT checkpoint, whose stored
            mode, attn_scale and input size are restored. Defaults to None.
        mode (str, optional): 'csa', 'qq', 'kk', 'vanilla' or 'maskclip'. None: the checkpoint's mode, else 'csa'.
            Defaults to None.
        attn_scale (float | str, optional): s in softmax(s a a^T): a number, '1/sqrt(d)' (1/sqrt(head_dim)), or
            None = the checkpoint's scale, else 1/sqrt(head_dim). An explicit value overrides a checkpoint's (logged
            as a warning): the authors distilled with s = 1 (their F-ViT / CAT-Seg code too) but run training-free
            segmentation with 1/sqrt(d). Defaults to None.
        out_indices (Sequence[int]): blocks whose outputs ``forward`` returns as (B, C, H, W) maps before the dense
            map (negative indices count from the end); the last block's index gives that block's output in the
            chosen mode. Defaults to ().
        trainable (str): 'blocks' (the distillation recipe: every transformer block, minus the last block's unused
            LN2/MLP and the unused q or k projection), 'all', or 'none': frozen, as F-ViT uses CLIP: no
            parameter trains, the tower stays in eval mode whatever ``train()`` says, and ``forward`` runs under
            ``no_grad`` (its outputs carry no graph). Defaults to 'blocks'.
        input_size (int, optional): the input side the weights are meant for (stored in checkpoints; informative).
            None: the checkpoint's. Defaults to None.
        last_tap_mode (str, optional): the mode of the last block for the map ``forward`` returns at the last
            block's index in ``out_indices`` (the input of F-ViT's fourth pyramid level); None = ``mode``.
            CLIPSelf's F-ViT uses 'maskclip' there; the only public DeCLIP + F-ViT recipe (DeCLIP issue #10) the
            decoupled output. Defaults to None.
        strict (bool): raise on missing/unexpected weight keys (they are always logged). Defaults to True.
        cache_dir (str, optional): Hugging Face cache folder to look for tagged weights in. Defaults to None.
        init_cfg (dict, optional): must be None: the weights come from ``pretrained``. Defaults to None.
    """

    def __init__(self,
                 model_name: str = 'EVA02-B-16',
                 pretrained: Optional[str] = None,
                 mode: Optional[str] = None,
                 attn_scale: Optional[float] = None,
                 out_indices: Sequence[int] = (),
                 trainable: str = 'blocks',
                 input_size: Optional[int] = None,
                 last_tap_mode: Optional[str] = None,
                 strict: bool = True,
                 cache_dir: Optional[str] = None,
                 init_cfg=None):
        if init_cfg is not None:
            raise ValueError('DeCLIPViT loads its weights with pretrained=...; init_cfg is not used')
        super().__init__()
        path = resolve_pretrained(model_name, pretrained, cache_dir)
        checkpoint = read_checkpoint(path) if path else None         # read once, any format (checkpoints.py)
        ours = checkpoint is not None and checkpoint.format == DECLIP_VIT
        saved = checkpoint.meta if checkpoint is not None else {}     # ours, or an open_clip HF folder's 'declip'
        if saved and saved.get('model_name') != model_name:
            raise ValueError(f"{pretrained} holds a DeCLIPViT of model '{saved.get('model_name')}', "
                             f"but model_name='{model_name}'")

        clip, self.load_report = create_clip(model_name, None if ours else pretrained, cache_dir, strict,
                                             weights=None if ours else checkpoint)
        if not ours:
            checkpoint = None                                         # CLIP weights: loaded into the tower above
        self.visual = clip.visual
        del clip
        self.view = make_view(self.visual)
        self.model_name = model_name
        self.family = self.view.family
        self.patch_size = self.view.patch_size[0]
        self.width = self.view.width
        self.embed_dim = self.view.embed_dim
        self.num_heads = self.view.num_heads
        self.depth = len(self.view.blocks)
        self._check_token_pooling()

        self.mode = self._setting('mode', mode, saved, 'csa', pretrained)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{self.mode}'")
        self.attn_scale = self._attention_scale(attn_scale, saved.get('attn_scale'), pretrained)
        self.input_size = saved.get('input_size', input_size) if input_size is None else input_size
        self.out_indices = tuple(i if i >= 0 else self.depth + i for i in out_indices)
        if any(not 0 <= i < self.depth for i in self.out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range for {self.depth} blocks')
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got '{trainable}'")
        self.trainable = trainable
        if last_tap_mode is not None and last_tap_mode not in MODES:
            raise ValueError(f"last_tap_mode must be one of {MODES} or None, got '{last_tap_mode}'")
        self.last_tap_mode = last_tap_mode

        if ours:
            self.load_report = load_into(self, checkpoint, strict, source=pretrained)
        self._set_trainable()

    # ---------------------------------------------------------------- construction helpers
    @staticmethod
    def _setting(name, value, saved, default, source):
        stored = saved.get(name)
        if stored is not None and value is not None and value != stored:
            raise ValueError(f"{source} was trained with {name}={stored!r}; running it with {name}={value!r} gives "
                             f"wrong features. Leave {name}=None to use the stored value.")
        if value is not None:
            return value
        return stored if stored is not None else default

    def _attention_scale(self, value, stored, source) -> float:
        """The config's value (a number or '1/sqrt(d)') wins over the checkpoint's, with a warning when they
        differ: the authors' segmentation protocol runs checkpoints distilled with s = 1 at 1/sqrt(d)."""
        inv_sqrt_d = 1.0 / math.sqrt(self.width // self.num_heads)
        if value == INV_SQRT_HEAD_DIM:
            value = inv_sqrt_d
        elif isinstance(value, str):
            raise ValueError(f"attn_scale must be a number, '{INV_SQRT_HEAD_DIM}' or None, got '{value}'")
        if value is None:
            return float(stored) if stored is not None else inv_sqrt_d
        if stored is not None and not math.isclose(value, stored):
            print_log(f'{source} was distilled with attn_scale={stored!r}; running it with attn_scale={value!r} '
                      'as the config asks', logger='current', level=logging.WARNING)
        return float(value)

    def _check_token_pooling(self):
        pool = getattr(self.visual, 'pool_type', None) or getattr(getattr(self.visual, 'trunk', None),
                                                                   'global_pool', None)
        if pool not in ('tok', 'token'):
            raise ValueError(f"{self.model_name} pools its image embedding with '{pool}'; DeCLIP needs a CLS-token "
                             "CLIP (its teacher embeds crops with the [CLS] token)")

    def _set_trainable(self):
        for p in self.parameters():
            p.requires_grad = self.trainable == 'all'
        if self.trainable != 'blocks':
            return
        for p in self.view.blocks.parameters():
            p.requires_grad = True
        if self.mode in DECOUPLED_MODES:
            last = self.view.blocks[-1]
            unused = list(self.view.unused_in_decoupled_block(last))
            q_params, k_params = self.view.qk_params(last)
            if self.mode == 'qq' and k_params:
                unused += k_params
            if self.mode == 'kk' and q_params:
                unused += q_params
            for p in unused:
                p.requires_grad = False

    @property
    def frozen(self) -> bool:
        return self.trainable == 'none'

    def train(self, mode: bool = True):
        """A frozen tower (``trainable='none'``) stays in eval mode."""
        return super().train(mode and not self.frozen)

    def init_weights(self):
        """Weights come from ``pretrained`` at construction; never re-initialise them here."""
        self._is_init = True

    # ---------------------------------------------------------------- forward passes
    def grid_of(self, images: torch.Tensor) -> Tuple[int, int]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f'expected images of shape (B, 3, H, W), got {tuple(images.shape)}')
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f'image size {h}x{w} is not a multiple of the patch size {p} of {self.model_name}; '
                             f'resize or pad to e.g. {math.ceil(h / p) * p}x{math.ceil(w / p) * p}')
        return h // p, w // p

    def _run_trunk(self, images: torch.Tensor, keep: Sequence[int] = ()):
        """Embed and run blocks 0..L-2. Returns (tokens (B, N, C), rope, grid, {index: tokens})."""
        grid = self.grid_of(images)
        x, rope = self.view.embed(images)
        kept = {}
        for i, block in enumerate(self.view.blocks[:-1]):
            x = self.view.run_block(block, x, rope)
            if i in keep:
                kept[i] = x
        return x, rope, grid, kept

    def _last_block(self, x, rope, mode: str):
        """Last block in ``mode``: (output tokens (B, N, C), context tokens incl. CLS or None)."""
        block = self.view.blocks[-1]
        if mode in DECOUPLED_MODES:
            return decoupled_block(self.view, block, x, mode, self.attn_scale)
        if mode == 'maskclip':
            return maskclip_block(self.view, block, x), None
        if mode == 'vanilla':
            return self.view.run_block(block, x, rope), None
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")

    @staticmethod
    def _patch_tokens(context: Optional[Context]) -> Optional[Context]:
        """Drop the CLS token from context tokens (B, N, C) or a (q, k) pair of them."""
        if context is None:
            return None
        return tuple(c[:, 1:] for c in context) if isinstance(context, tuple) else context[:, 1:]

    @staticmethod
    def _to_map(tokens: torch.Tensor, grid) -> torch.Tensor:
        """Patch tokens (B, H*W, C) -> (B, C, H, W)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], *grid).contiguous()

    def forward_features(self, images: torch.Tensor, mode: Optional[str] = None,
                         out_indices: Optional[Sequence[int]] = None) -> DeCLIPFeatures:
        """One pass: dense map, context features and intermediate maps (see :class:`DeCLIPFeatures`)."""
        mode = mode or self.mode
        out_indices = self.out_indices if out_indices is None else out_indices
        x, rope, grid, kept = self._run_trunk(images, out_indices)
        last, context = self._last_block(x, rope, mode)
        tap_mode = self.last_tap_mode or mode
        kept[self.depth - 1] = last if tap_mode == mode or self.depth - 1 not in out_indices else \
            self._last_block(x, rope, tap_mode)[0]
        intermediates = [self._to_map(kept[i][:, 1:], grid) for i in out_indices]
        dense = self._to_map(self.view.head(last[:, 1:]), grid)
        return DeCLIPFeatures(dense, self._patch_tokens(context), intermediates)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps for necks: the (B, C, H, W) maps at ``out_indices``, then the (B, D, H, W) dense map
        (not normalised). A frozen tower runs under ``no_grad``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.forward_features(images)
        return (*feats.intermediates, feats.dense)

    def extract_dense(self, images: torch.Tensor, mode: Optional[str] = None, normalize: bool = True) -> torch.Tensor:
        """Dense map (B, D, H/p, W/p) in the joint image-text space, L2-normalised per token by default."""
        dense = self.forward_features(images, mode, out_indices=()).dense
        return F.normalize(dense, dim=1) if normalize else dense

    def extract_context(self, images: torch.Tensor, mode: Optional[str] = None) -> Context:
        """Context tokens (B, H/p*W/p, C): q for 'qq', k for 'kk', a (q, k) pair for 'csa'."""
        mode = mode or self.mode
        if mode not in DECOUPLED_MODES:
            raise ValueError(f"context features exist for the decoupled modes {DECOUPLED_MODES}, not '{mode}'")
        x, rope, _, _ = self._run_trunk(images)
        return self._patch_tokens(self._last_block(x, rope, mode)[1])

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The unmodified CLIP image embedding (B, D) from the [CLS] token (what the CLIP teacher uses)."""
        x, rope, _, _ = self._run_trunk(images)
        x = self.view.run_block(self.view.blocks[-1], x, rope)
        embedding = self.view.head(x[:, :1])[:, 0]
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def extract_regions(self, images_or_dense: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int = 1,
                        box_units: str = 'pixels', normalize: bool = True, mode: Optional[str] = None):
        """Region embeddings pooled from the dense map with mmcv's RoIAlign (aligned, adaptive sampling).

        Args:
            images_or_dense: images (B, 3, H, W), or a dense map (B, D, h, w) from ``extract_dense(...,
                normalize=False)``.
            boxes: per image an (n_i, 4) xyxy tensor, in input pixels (``box_units='pixels'``) or tokens.
            output_size: 1 gives one embedding per box; N gives the N x N RoIAlign cells.
        Returns:
            per image an (n_i, D) tensor (output_size 1) or (n_i, N*N, D) cells, L2-normalised if ``normalize``.
        """
        if images_or_dense.dim() == 4 and images_or_dense.shape[1] == 3:
            dense = self.extract_dense(images_or_dense, mode=mode, normalize=False)
        elif images_or_dense.dim() == 4 and images_or_dense.shape[1] == self.embed_dim:
            dense = images_or_dense
        else:
            raise ValueError(f'expected images (B, 3, H, W) or a dense map (B, {self.embed_dim}, h, w), '
                             f'got {tuple(images_or_dense.shape)}')
        return pool_regions(dense, boxes, self.patch_size, output_size, box_units, normalize)

    # ---------------------------------------------------------------- checkpoints
    def declip_meta(self) -> dict:
        """What a checkpoint must carry to be run the way it was trained."""
        return dict(format=CHECKPOINT_FORMAT, model_name=self.model_name, family=self.family, mode=self.mode,
                    attn_scale=self.attn_scale, input_size=self.input_size)

    def save_checkpoint(self, path: str, **extra_meta) -> None:
        """Save weights and metadata; ``DeCLIPViT(model_name, pretrained=path)`` restores both."""
        meta = dict(declip=self.declip_meta(), **extra_meta)
        torch.save(dict(state_dict=self.state_dict(), meta=meta), path)
