"""``DenseFeatureExtractor``: DeCLIP's dense map of a photo or of video frames, and region / mask embeddings.

    from declip_mm.apis import DenseFeatureExtractor
    fx = DenseFeatureExtractor('EVA02-B-16', backbone='declip_eva02_b16.pth', device='cuda')
    f = fx('photo.jpg')                         # DenseFeatures: f.map (D, h, w) raw, f.normalized(), f.stride
    fx.regions(f, boxes)                        # (n, D) boxes (n, 4) xyxy in the photo's pixels, RoIAlign 1x1
    fx.masks(f, masks)                          # (n, D) boolean masks (n, H, W) at the photo's size, mask pooling
    fx.video(frames)                            # (T, D, h, w) for T frames of one size, batched

The network input: the photo resized so that its longest side is ``long_side`` (a multiple of the patch size;
448 by default), normalised with the CLIP mean / std, zero-padded right / bottom to the patch size (the region-
classification protocol, whose mask pooling ``masks`` reuses). The map is in the joint image-text space: the
cosine of ``normalized()`` with a class's text embedding scores that class at every token.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import CLIP_MEAN_255_ROUNDED, CLIP_STD_255_ROUNDED, DENSE_LONG_SIDE, TINY_MODELS, VIDEO_BATCH_SIZE
from .backends import check_backend, onnx_towers
from .image_size import MAX_ASPECT, check_aspect, rescaled
from .inputs import as_rgb_image, to_rgb_uint8
from .precision import autocast, check_device, resolve_precision
from .random_weights import warn_if_random


@dataclass
class DenseFeatures:
    """map: (D, h, w) float32 raw (un-normalised) dense map on the CPU, covering the network input; stride: the
    patch size in network pixels; scale: network pixels per image pixel; image_shape: (H, W) of the photo;
    input_shape: (h', w') of the resized photo before padding."""
    map: torch.Tensor
    stride: int
    scale: Tuple[float, float]
    image_shape: Tuple[int, int]
    input_shape: Tuple[int, int]

    def normalized(self) -> torch.Tensor:
        """(D, h, w), L2-normalised per token."""
        return F.normalize(self.map, dim=0)

    def meta(self) -> dict:
        return dict(shape=list(self.map.shape), stride=self.stride, scale_yx=list(self.scale),
                    image_size=list(self.image_shape), input_size=list(self.input_shape))


class DenseFeatureExtractor:
    """DeCLIP dense features for users (module doc).

    Args:
        model_name (str): as :class:`OpenVocabSegmenter`. Defaults to 'DeCLIP-Tiny-ViT-16'.
        backbone (str, optional): as :class:`OpenVocabSegmenter`; None = random init. Defaults to None.
        device (str | torch.device): as :class:`OpenVocabSegmenter`. Defaults to 'cpu'.
        precision (str): as :class:`OpenVocabSegmenter`. Defaults to 'auto'.
        mode (str, optional): the last block's mode ('csa', 'qq', 'kk', 'vanilla', 'maskclip'); None = the
            checkpoint's, or 'csa'. Defaults to None.
        attn_scale (float | str, optional): None = the checkpoint's (or 1/sqrt(d)), a number or '1/sqrt(d)'.
            Defaults to None.
        long_side (int): network input's longest side in pixels (rounded up to the patch size). Defaults to 448.
        batch_size (int): frames per forward in :meth:`video`. Defaults to 8.
        max_aspect (float): images more elongated than this are refused. Defaults to 64.0.
        backend (str): 'pytorch', or 'onnxruntime' to run the image tower of an ONNX export folder given as
            ``backbone`` (``declip-mm export --onnx``; CPU, fp32; its mode and scale). Defaults to 'pytorch'.
    """
    backend = 'pytorch'

    def __init__(self, model_name: str = TINY_MODELS[0], backbone: Optional[str] = None, device='cpu',
                 precision: str = 'auto', mode: Optional[str] = None, attn_scale=None, long_side: int = DENSE_LONG_SIDE,
                 batch_size: int = VIDEO_BATCH_SIZE, max_aspect: float = MAX_ASPECT, backend: str = 'pytorch'):
        check_backend(backend, device, precision)
        if backend == 'onnxruntime':
            backbone_cfg, _, _ = onnx_towers(backbone, model_name, mode, attn_scale, text=False)
            precision = 'fp32'
        else:
            warn_if_random(model_name, backbone=backbone)
            backbone_cfg = dict(type='DeCLIPViT', model_name=model_name, pretrained=backbone, mode=mode,
                                attn_scale=attn_scale, trainable='none')
        self.backend = backend
        self._setup(backbone_cfg, device, precision, long_side, batch_size, max_aspect)

    @classmethod
    def from_config(cls, config, checkpoint: Optional[str] = None, device='cpu', precision: str = 'auto',
                    long_side: int = DENSE_LONG_SIDE, batch_size: int = VIDEO_BATCH_SIZE,
                    max_aspect: float = MAX_ASPECT):
        """From any config whose ``model.backbone`` (or a distillation's ``model.student``) is a DeCLIPViT, and
        optionally a checkpoint for it (a DeCLIPViT checkpoint or CLIP weights file, as ``tools/test.py``)."""
        from mmengine.config import Config

        from ..engine.runner_setup import attach_checkpoint
        cfg = Config.fromfile(str(config)) if not isinstance(config, Config) else config.copy()
        backbone = cfg.model.get('backbone') or cfg.model.get('student')
        if backbone is None or backbone.get('type') not in ('DeCLIPViT', 'declip_mm.DeCLIPViT'):
            raise ValueError(f'{config}: model.backbone is not a DeCLIPViT')
        cfg.load_from = None
        if checkpoint is not None:
            how = attach_checkpoint(cfg, checkpoint)
            if how == 'load_from':
                raise ValueError(f'{checkpoint} is a whole-model checkpoint; DenseFeatureExtractor takes a DeCLIPViT '
                                 'checkpoint or CLIP weights (e.g. the declip_backbone_final.pth a distillation exports)')
        backbone = dict(backbone, trainable='none')
        backbone.pop('out_indices', None)
        self = cls.__new__(cls)
        self._setup(backbone, device, precision, long_side, batch_size, max_aspect)
        return self

    def _setup(self, backbone_cfg, device, precision, long_side, batch_size, max_aspect):
        from mmengine.registry import init_default_scope

        from ..registry import MODELS
        init_default_scope('declip_mm')
        self.device = check_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.backbone = (MODELS.build(backbone_cfg) if isinstance(backbone_cfg, dict) else backbone_cfg).to(
            self.device).eval()
        p = self.backbone.patch_size
        if long_side < p:
            raise ValueError(f'long_side {long_side} is below the patch size {p}')
        self.long_side = int(math.ceil(long_side / p) * p)
        self.batch_size, self.max_aspect = batch_size, max_aspect
        self.mean = torch.tensor(CLIP_MEAN_255_ROUNDED, device=self.device).view(3, 1, 1)   # the protocols' CLIP
        self.std = torch.tensor(CLIP_STD_255_ROUNDED, device=self.device).view(3, 1, 1)     # mean / std

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    # ------------------------------------------------------------------ inputs
    def _input(self, rgb: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """RGB uint8 (H, W, 3) -> normalised, padded (3, h, w) tensor on the device, and the unpadded size."""
        import mmcv
        h, w = rgb.shape[:2]
        check_aspect(h, w, self.max_aspect)
        in_h, in_w = rescaled(h, w, self.long_side / max(h, w))
        resized = mmcv.imresize(rgb, (in_w, in_h), interpolation='bilinear', backend='cv2')
        x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(self.device).float()
        x = (x - self.mean) / self.std
        p = self.backbone.patch_size
        return F.pad(x, (0, -in_w % p, 0, -in_h % p)), (in_h, in_w)

    @torch.no_grad()
    def _dense(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            dense = self.backbone.extract_dense(batch, normalize=False)
        return dense.float()

    def _features(self, dense: torch.Tensor, image_shape, input_shape) -> DenseFeatures:
        (h, w), (in_h, in_w) = image_shape, input_shape
        return DenseFeatures(map=dense.cpu(), stride=self.backbone.patch_size, scale=(in_h / h, in_w / w),
                             image_shape=(h, w), input_shape=(in_h, in_w))

    # ------------------------------------------------------------------ features
    def __call__(self, image) -> DenseFeatures:
        """An image (RGB uint8 array, PIL image or path) -> :class:`DenseFeatures`."""
        rgb = as_rgb_image(image)
        x, in_hw = self._input(rgb)
        return self._features(self._dense(x[None])[0], rgb.shape[:2], in_hw)

    def video(self, frames: Union[np.ndarray, Sequence[np.ndarray]]) -> torch.Tensor:
        """T frames of one size ((T, H, W, 3) array or a list of RGB arrays) -> (T, D, h, w) float32 raw dense maps,
        ``batch_size`` frames per forward."""
        frames = [to_rgb_uint8(f, f'frame {i}') for i, f in enumerate(frames)]
        if not frames:
            raise ValueError('video(): no frames')
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise ValueError(f'video(): frames differ in size {sorted(sizes)}; give frames of one video')
        out = []
        for start in range(0, len(frames), self.batch_size):
            batch = torch.stack([self._input(f)[0] for f in frames[start:start + self.batch_size]])
            out.append(self._dense(batch).cpu())
        return torch.cat(out)

    def _as_features(self, image_or_features) -> DenseFeatures:
        return image_or_features if isinstance(image_or_features, DenseFeatures) else self(image_or_features)

    def regions(self, image_or_features, boxes) -> torch.Tensor:
        """Boxes (n, 4) xyxy in the image's pixels -> (n, D) L2-normalised region embeddings (RoIAlign 1x1 of
        the raw map, then normalised: the authors' box pooling)."""
        f = self._as_features(image_or_features)
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4) if not isinstance(
            boxes, torch.Tensor) else boxes.float().reshape(-1, 4)
        if len(boxes) == 0:
            return torch.zeros(0, f.map.shape[0])
        H, W = f.image_shape
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bad.any():
            raise ValueError(f'boxes must be xyxy with x2 > x1 and y2 > y1; box {int(bad.nonzero()[0, 0])} is '
                             f'{boxes[bad][0].tolist()}')
        sy, sx = f.scale
        scaled = boxes * torch.tensor([sx, sy, sx, sy])
        from ..models.backbones.declip_vit import pool_regions
        return pool_regions(f.map[None].to(self.device), [scaled.to(self.device)], f.stride)[0].float().cpu()

    def masks(self, image_or_features, masks) -> torch.Tensor:
        """Boolean masks (n, H, W) at the image's size -> (n, D) L2-normalised mask-pooled embeddings (the
        region classifier's ``mask_pool``: the mean of the raw tokens under each mask; zero for a mask too small
        to cover a token)."""
        from ..models.classifiers.region_classifier import mask_pool
        f = self._as_features(image_or_features)
        masks = torch.as_tensor(np.asarray(masks)).bool()
        if masks.dim() == 2:
            masks = masks[None]
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != tuple(f.image_shape):
            raise ValueError(f'masks must be (n, H, W) at the image size {tuple(f.image_shape)}, got {tuple(masks.shape)}')
        return mask_pool(f.map, masks)
