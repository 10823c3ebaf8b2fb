"""The attention and affinity explorer: what the last block of a DeCLIP tower looks at from a point of a photo.

    from declip_mm.apis import AttentionExplorer
    ex = AttentionExplorer('EVA02-B-16', backbone='declip_eva02_b16.pth', vfm=dict(arch='dinov2_vitb14_reg',
                           checkpoint='dinov2_vitb14_reg4_pretrain.pth'))
    maps = ex('photo.jpg', [(120, 80), (400, 300)])     # points (x, y) in the photo's pixels
    maps.panels['vanilla']                              # (P, h, w) float32, one map per point, on the token grid
    maps.figure()                                       # PIL image: points x panels, the point marked
    maps.arrays()                                       # everything for one .npz

For a point, with t its token (:func:`pixel_to_token`), q, k the last block's query / key tokens (biases
included, heads split, d the head width, N = 1 + h*w tokens, CLS first) and every map averaged over heads and
restricted to the h*w patch tokens (the columns; CLS is left out of the picture, not out of the softmax):

=============  ===================================================================================================
vanilla        softmax(q_t k^T / sqrt(d)): the unmodified CLIP block's attention (EVA: with its rotary embedding)
csa            softmax(q_t q^T / sqrt(d)) + softmax(k_t k^T / sqrt(d)): training-free CSA (SCLIP), the protocol scale
declip         the decoupled block's attention in the model's mode at its attn_scale s: softmax(s q_t q^T) ('qq'),
               softmax(s k_t k^T) ('kk') or their sum ('csa') (decoupled_attention.py); absent for
               'vanilla' / 'maskclip' towers
dense          cos(f_t, f_j) of the dense (joint-space) map: what segmentation compares
vfm            cos(g_t, g_j) of the VFM's tokens (``cosine_matrix``, as the distillation's target), with a VFM
sd             (A_sd S_vfm)_t: the VFM affinity completed with Stable Diffusion self-attention
               (``complete_with_diffusion``), with a VFM and an SD folder
=============  ===================================================================================================

The VFM and SD views are built as the distillation builds them (``resize_and_pad``: longest side to the square
view, black padding right / bottom) on a G x G grid, G = the longest side in student tokens, so the student's
h x w grid is its top-left corner; their affinities are computed on the whole square (as the loss sees them) and
cropped to h x w.

Colour scale: every map is drawn min-max normalised onto [0, 1] of one colour map (its own min -> dark blue,
its own max -> red; a constant map is drawn all dark blue), the same colour map for every panel; each panel's title gives its
raw min and max, and the raw maps are saved unscaled.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..constants import DENSE_LONG_SIDE

PANELS = ('vanilla', 'csa', 'declip', 'dense', 'vfm', 'sd')
PANEL_TITLES = dict(vanilla='CLIP attention', csa='CSA attention', declip='DeCLIP context', dense='dense cosine',
                    vfm='VFM affinity', sd='SD-completed')
SD_SIZE = 512


class PointError(ValueError):
    """A query point that is not a pixel of the image (a usage error)."""


# ---------------------------------------------------------------------- pixels -> tokens (no torch)
def parse_point(text: str) -> Tuple[float, float]:
    """'X,Y' -> (x, y) floats (:class:`PointError` for anything else)."""
    parts = str(text).replace(' ', '').split(',')
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise PointError(f"a point is X,Y in the image's pixels (e.g. 120,80), got '{text}'") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise PointError(f"a point is X,Y in the image's pixels (finite numbers), got '{text}'")
    return x, y


def check_points(points: Sequence[Tuple[float, float]], image_hw: Tuple[int, int]) -> List[Tuple[float, float]]:
    """Points (x, y) inside a (H, W) image: 0 <= x < W, 0 <= y < H (:class:`PointError` otherwise)."""
    h, w = image_hw
    points = [(float(p[0]), float(p[1])) for p in points]
    if not points:
        raise PointError('give at least one point X,Y')
    for x, y in points:
        if not (0 <= x < w and 0 <= y < h):
            raise PointError(f'point {x:g},{y:g} is outside the {w} x {h} image (x in [0, {w}), y in [0, {h}))')
    return points


def input_geometry(image_hw: Tuple[int, int], long_side: int, patch: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The dense path's geometry (DenseFeatureExtractor._input): the resized size (h', w'), longest side
    ``long_side`` (mmcv's rounding), and the token grid (ceil(h'/p), ceil(w'/p)) after padding right / bottom."""
    from .image_size import rescaled
    h, w = image_hw
    in_h, in_w = rescaled(h, w, long_side / max(h, w))
    return (in_h, in_w), (-(-in_h // patch), -(-in_w // patch))


def pixel_to_token(x: float, y: float, image_hw: Tuple[int, int], long_side: int, patch: int) -> Tuple[int, int]:
    """The (row, col) of the token that covers pixel (x, y) of an (H, W) image in the dense path: the pixel's
    centre (x + 0.5, y + 0.5) scaled by h'/H, w'/W (:func:`input_geometry`), divided by the patch size. The one
    rule of the command, the API and the web page."""
    check_points([(x, y)], image_hw)
    h, w = image_hw
    (in_h, in_w), (gh, gw) = input_geometry(image_hw, long_side, patch)
    row = int((y + 0.5) * in_h / h // patch)
    col = int((x + 0.5) * in_w / w // patch)
    return min(max(row, 0), gh - 1), min(max(col, 0), gw - 1)


def page_to_pixel(x: float, y: float, shown_wh: Tuple[float, float], image_hw: Tuple[int, int]) -> Tuple[float, float]:
    """A click at (x, y) on the image shown ``shown_wh`` = (width, height) on the page -> the image's pixel (x, y)."""
    sw, sh = float(shown_wh[0]), float(shown_wh[1])
    if not (sw > 0 and sh > 0):
        raise PointError(f'the shown size must be positive, got {sw:g} x {sh:g}')
    if not (0 <= x <= sw and 0 <= y <= sh):
        raise PointError(f'the click {x:g},{y:g} is outside the image shown {sw:g} x {sh:g}')
    h, w = image_hw
    return min(x * w / sw, w - 1e-3), min(y * h / sh, h - 1e-3)     # the far edge belongs to the last pixel


# ---------------------------------------------------------------------- the maps
def colour_map(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> (..., 3) uint8, a blue-cyan-yellow-red ramp (jet-like)."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], -1) * 255).astype(np.uint8)


def normalise01(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


@dataclass
class AttentionMaps:
    """The explorer's answer for one image. panels: name -> (P, h, w) float32 raw maps (module doc); points:
    (x, y) per point in the image's pixels; tokens: (row, col) per point; grid: (h, w); input_shape: (h', w')
    of the resized image; image: the RGB photo; random_weights: the towers are random (the figure says so)."""
    panels: Dict[str, np.ndarray]
    points: List[Tuple[float, float]]
    tokens: List[Tuple[int, int]]
    grid: Tuple[int, int]
    input_shape: Tuple[int, int]
    patch_size: int
    image: np.ndarray = field(repr=False)
    random_weights: bool = False
    settings: dict = field(default_factory=dict)

    def arrays(self) -> dict:
        """Everything for one ``np.savez``: a (P, h, w) array per panel, points, tokens, grid, input_shape."""
        out = {name: m.astype(np.float32) for name, m in self.panels.items()}
        out.update(points=np.asarray(self.points, np.float32), tokens=np.asarray(self.tokens, np.int64),
                   grid=np.asarray(self.grid, np.int64), input_shape=np.asarray(self.input_shape, np.int64),
                   patch_size=np.asarray(self.patch_size), random_weights=np.asarray(self.random_weights))
        return out

    def figure(self, panel_side: int = 224, alpha: float = 0.6, note: Optional[str] = None):
        """A PIL image: one row per point, one column per panel (the photo blended with the map, min-max over the
        map onto one colour ramp, the point marked by a white ring); ``note`` on a red band on top."""
        from PIL import Image, ImageDraw

        from .fonts import draw_text
        from .visualization import draw_note
        H, W = self.image.shape[:2]
        scale = panel_side / max(H, W)
        pw, ph = max(1, round(W * scale)), max(1, round(H * scale))
        photo = np.asarray(Image.fromarray(self.image).resize((pw, ph), Image.BILINEAR), np.float32)
        (in_h, in_w), p = self.input_shape, self.patch_size
        names = list(self.panels)
        title, gap = 30, 4
        canvas = Image.new('RGB', (len(names) * (pw + gap) + gap, len(self.points) * (ph + title + gap) + gap),
                           (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for i, (x, y) in enumerate(self.points):
            top = gap + i * (ph + title + gap)
            for j, name in enumerate(names):
                left = gap + j * (pw + gap)
                raw = self.panels[name][i]
                heat = colour_map(normalise01(raw))
                # the token grid covers the padded input: crop the part over the image, then resize to the panel
                cover = Image.fromarray(heat).resize((raw.shape[1] * p, raw.shape[0] * p), Image.NEAREST)
                cover = cover.crop((0, 0, in_w, in_h)).resize((pw, ph), Image.NEAREST)
                blend = (photo * (1 - alpha) + np.asarray(cover, np.float32) * alpha).astype(np.uint8)
                canvas.paste(Image.fromarray(blend), (left, top + title))
                cx, cy = left + (x + 0.5) * scale, top + title + (y + 0.5) * scale
                for radius, colour in ((6, (0, 0, 0)), (5, (255, 255, 255))):
                    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=2)
                draw_text(canvas, (left + 2, top + 1), f'{PANEL_TITLES.get(name, name)} @ {x:g},{y:g}',
                          fill=(0, 0, 0))
                draw_text(canvas, (left + 2, top + 15), f'min {raw.min():.3g}  max {raw.max():.3g}', fill=(90, 90, 90))
        return canvas if note is None else draw_note(canvas, note)


class AttentionExplorer:
    """Attention and affinity maps of a DeCLIP tower at query points of a photo (module doc).

    Args:
        model_name, backbone, device, precision, mode, attn_scale, long_side: as :class:`DenseFeatureExtractor`
            (whose input rule, resize and padding the explorer uses).
        vfm (dict | VFMTeacher, optional): a VFMTeacher config (``dict(arch=..., checkpoint=...)``, as a
            distillation config's ``vfm_teacher``) or a built one: adds the 'vfm' panel. Defaults to None.
        sd (dict | DiffusionTeacher, optional): a DiffusionTeacher config (``dict(folder=...)``) or a built one:
            adds the 'sd' panel (needs ``vfm``). Defaults to None.
        sd_size (int): the side of the square SD view (the distillation's ``sd_size``). Defaults to 512.
    """

    def __init__(self, model_name: Optional[str] = None, backbone: Optional[str] = None, device='cpu',
                 precision: str = 'auto', mode: Optional[str] = None, attn_scale=None,
                 long_side: int = DENSE_LONG_SIDE, vfm=None, sd=None, sd_size: int = SD_SIZE, features=None):
        from .features import DenseFeatureExtractor
        if features is None:
            kwargs = dict(backbone=backbone, device=device, precision=precision, mode=mode, attn_scale=attn_scale,
                          long_side=long_side)
            features = DenseFeatureExtractor(model_name, **kwargs) if model_name else DenseFeatureExtractor(**kwargs)
        self._attach(features, vfm, sd, sd_size)

    @classmethod
    def from_config(cls, config, checkpoint: Optional[str] = None, device='cpu', precision: str = 'auto',
                    long_side: int = DENSE_LONG_SIDE, vfm=None, sd=None, sd_size: int = SD_SIZE):
        """From a config whose model has a DeCLIPViT backbone / student (:meth:`DenseFeatureExtractor.from_config`)."""
        from .features import DenseFeatureExtractor
        fx = DenseFeatureExtractor.from_config(config, checkpoint, device=device, precision=precision,
                                               long_side=long_side)
        return cls(features=fx, vfm=vfm, sd=sd, sd_size=sd_size)

    @classmethod
    def from_backbone(cls, backbone, device='cpu', precision: str = 'fp32', long_side: int = DENSE_LONG_SIDE,
                      vfm=None, sd=None, sd_size: int = SD_SIZE):
        """Around a built DeCLIPViT (e.g. a segmenter's ``model.backbone``: the web page shares its tower), with
        :class:`DenseFeatureExtractor`'s input rule."""
        import torch

        from ..constants import CLIP_MEAN_255_ROUNDED, CLIP_STD_255_ROUNDED
        from .features import DenseFeatureExtractor
        from .image_size import MAX_ASPECT
        fx = DenseFeatureExtractor.__new__(DenseFeatureExtractor)
        fx.device, fx.precision, fx.backbone = torch.device(device), precision, backbone
        p = backbone.patch_size
        fx.long_side, fx.batch_size, fx.max_aspect = int(math.ceil(long_side / p) * p), 1, MAX_ASPECT
        fx.mean = torch.tensor(CLIP_MEAN_255_ROUNDED, device=fx.device).view(3, 1, 1)
        fx.std = torch.tensor(CLIP_STD_255_ROUNDED, device=fx.device).view(3, 1, 1)
        return cls(features=fx, vfm=vfm, sd=sd, sd_size=sd_size)

    def _attach(self, features, vfm, sd, sd_size):
        from ..registry import MODELS
        if sd is not None and vfm is None:
            raise ValueError('the SD-completed affinity completes the VFM affinity: give vfm= too')
        if sd_size % 8:
            raise ValueError(f'sd_size must be a multiple of 8, got {sd_size}')
        self.features = features
        self.backbone = features.backbone
        self.device, self.precision, self.long_side = features.device, features.precision, features.long_side
        self.vfm = MODELS.build(dict(vfm, type=vfm.get('type', 'VFMTeacher'))) if isinstance(vfm, dict) else vfm
        self.sd = MODELS.build(dict(sd, type=sd.get('type', 'DiffusionTeacher'))) if isinstance(sd, dict) else sd
        for teacher in (self.vfm, self.sd):
            if teacher is not None:
                teacher.to(self.device).eval()
        self.sd_size = sd_size

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    def token_of(self, x: float, y: float, image_hw: Tuple[int, int]) -> Tuple[int, int]:
        """(row, col) of the token covering pixel (x, y) (:func:`pixel_to_token` at this explorer's long side)."""
        return pixel_to_token(x, y, image_hw, self.long_side, self.patch_size)

    # ------------------------------------------------------------------ the passes
    def _student(self, x):
        """q, k (B, h, N, d) as the last block computes them, q_rot / k_rot with EVA's rotary embedding (what the
        vanilla block attends with), the dense map (B, D, h, w) and the context tokens of the model's mode."""
        import torch
        from ..models.backbones.vision_towers import split_heads
        bb, view = self.backbone, self.backbone.view
        tokens, rope, grid, _ = bb._run_trunk(x)
        block = view.blocks[-1]
        q, k, v = view.qkv(block, view.norm1(block, tokens))
        heads = view.num_heads
        qh, kh = split_heads(q, heads), split_heads(k, heads)
        q_rot, k_rot = qh, kh
        if rope is not None:                          # EVA: the normal block rotates the patch tokens' q and k
            from timm.layers import apply_rot_embed_cat
            half = getattr(block.attn, 'rotate_half', False)
            q_rot = torch.cat([qh[:, :, :1], apply_rot_embed_cat(qh[:, :, 1:], rope, half=half)], dim=2)
            k_rot = torch.cat([kh[:, :, :1], apply_rot_embed_cat(kh[:, :, 1:], rope, half=half)], dim=2)
        last, _ = bb._last_block(tokens, rope, bb.mode)
        dense = bb.view.head(last[:, 1:])
        return qh, kh, q_rot, k_rot, dense, grid

    def _teacher_affinity(self, rgb: np.ndarray, side: int) -> 'torch.Tensor':  # noqa: F821
        """The distillation's context target on a side x side token grid (B=1, side^2, side^2): cosine_matrix of
        the VFM tokens, completed with SD self-attention when an SD teacher is given."""
        import torch
        from PIL import Image

        from ..constants import IMAGENET_MEAN_255, IMAGENET_STD_255
        from ..datasets.distill_dataset import resize_and_pad
        from ..models.losses import complete_with_diffusion, cosine_matrix
        pil = Image.fromarray(rgb)
        mean = torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD_255).view(1, 3, 1, 1)
        view = (resize_and_pad(pil, side * self.vfm.patch_size)[None].float() - mean) / std
        s_vfm = cosine_matrix(self.vfm(view.to(self.device)))
        if self.sd is None:
            return s_vfm, None
        sd_view = resize_and_pad(pil, self.sd_size)[None].float() / 127.5 - 1
        a_sd = self.sd(sd_view.to(self.device), (side, side))
        return s_vfm, complete_with_diffusion(s_vfm, a_sd)

    def __call__(self, image, points: Sequence[Tuple[float, float]], random_weights: bool = False) -> AttentionMaps:
        """An image (RGB uint8 array, PIL image or path) and points (x, y) in its pixels -> :class:`AttentionMaps`."""
        import torch

        from ..models.backbones.decoupled_attention import DECOUPLED_MODES
        from .inputs import as_rgb_image
        from .precision import autocast
        rgb = as_rgb_image(image)
        H, W = rgb.shape[:2]
        points = check_points(points, (H, W))
        tokens = [self.token_of(x, y, (H, W)) for x, y in points]
        x, in_hw = self.features._input(rgb)
        bb = self.backbone
        with torch.no_grad(), autocast(self.precision, self.device):
            qh, kh, q_rot, k_rot, dense, (gh, gw) = self._student(x[None])
        qh, kh, q_rot, k_rot, dense = (t.float() for t in (qh, kh, q_rot, k_rot, dense))
        idx = torch.tensor([1 + r * gw + c for r, c in tokens], device=qh.device)     # rows in the N tokens
        d = qh.shape[-1]

        def rows(a, b, scale):                                  # softmax(scale a_t b^T), mean over heads
            logits = torch.einsum('hpd,hnd->hpn', a[0, :, idx], b[0]) * scale
            return logits.softmax(-1).mean(0)[:, 1:]            # (P, h*w): patch columns

        s = bb.attn_scale
        maps = dict(vanilla=rows(q_rot, k_rot, d ** -0.5),
                    csa=rows(qh, qh, d ** -0.5) + rows(kh, kh, d ** -0.5))
        mode = bb.mode
        if mode in DECOUPLED_MODES:
            maps['declip'] = {'qq': lambda: rows(qh, qh, s), 'kk': lambda: rows(kh, kh, s),
                              'csa': lambda: rows(qh, qh, s) + rows(kh, kh, s)}[mode]()
        f = torch.nn.functional.normalize(dense[0], dim=-1)                            # (h*w, D)
        maps['dense'] = f[idx - 1] @ f.T
        if self.vfm is not None:
            side = max(gh, gw)
            s_vfm, s_sd = self._teacher_affinity(rgb, side)
            rows_sq = torch.tensor([r * side + c for r, c in tokens], device=s_vfm.device)

            def crop(m):                                        # square-grid rows -> the student's h x w corner
                return m[0, rows_sq].reshape(len(tokens), side, side)[:, :gh, :gw].reshape(len(tokens), -1)
            maps['vfm'] = crop(s_vfm)
            if s_sd is not None:
                maps['sd'] = crop(s_sd)
        panels = {name: maps[name].float().cpu().numpy().reshape(len(tokens), gh, gw) for name in PANELS
                  if name in maps}
        settings = dict(model=bb.model_name, mode=mode, attn_scale=s, long_side=self.long_side,
                        vfm=getattr(self.vfm, 'arch', None), sd=self.sd is not None,
                        colour_scale='each map min-max normalised onto [0, 1] of one colour ramp')
        return AttentionMaps(panels, points, tokens, (gh, gw), tuple(in_hw), bb.patch_size, rgb,
                             random_weights, settings)
