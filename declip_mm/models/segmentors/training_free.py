"""Training-free open-vocabulary semantic segmentation with a DeCLIP (or any CLIP) image tower (docs/evaluation.md),
following the authors' ``DeCLIPSegmentation`` (DeCLIP zero-shot branch, built on ProxyCLIP):

1. every synonym of every class is its own text query (S queries for K classes);
2. per window: the cosine of the L2-normalised dense features with each query, bilinear to the window
   (mmseg's ``EncoderDecoder.slide_inference``: windows summed, divided by their coverage);
3. bilinear to the original image size, times the logit scale;
4. softmax over ALL S queries; per class the highest probability among its queries;
5. argmax over classes; pixels whose highest class probability is below ``bg_thresh`` become ``bg_index``.

``seg_logits`` of each result holds the class probabilities of step 4 (K, H, W). Any DeCLIPViT mode works,
so vanilla CLIP, MaskCLIP ('maskclip') and SCLIP-style ('csa') baselines are one config key away.

Throughput: all windows of an image have the same size (min(crop, H) x min(crop, W)), so the slide path stacks
them and runs the backbone once for as many windows as ``test_cfg.window_budget_mb`` allows (estimated
activation peak of one window: :func:`window_activation_bytes`), capped by ``test_cfg.window_batch``
(1 = the authors' one window per forward). The cosines are then taken, resized and summed window by window in
the authors' order, so the result equals the one-window path up to the backbone's batched-matmul rounding.

Memory (:meth:`TrainingFreeSegmentor.predict`): the backbone runs once per image, then the text queries are scored
in chunks of :meth:`~TrainingFreeSegmentor.queries_per_chunk` (``test_cfg.score_budget_mb``): per chunk the
window-averaged cosines at the input size and the logits at the output size, folded into a running per-class
maximum and a running softmax maximum and sum (``ChunkedClassProbabilities``). So the (S, H, W) maps of all S
queries never exist at once; only the (K, H0, W0) class probabilities of the result do. Labels equal, and
probabilities agree to 1e-6 with, the unchunked :meth:`slide_inference` + :meth:`postprocess_result`.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.structures import SegDataSample

from ...constants import SEGMENTATION_PROTOCOL
from ...registry import MODELS
from ..text.vocabulary import ClassVocabularyMixin, load_class_names  # noqa: F401 (re-exported)


# default memory budget of one batched backbone forward: every window of the paper configs' images (448 short side,
# 336 / 112 windows: 8-12 windows; Cityscapes 560 x 1120: 24) in one forward with a B/16 or L/14 tower
DEFAULT_WINDOW_BUDGET_MB = 1024
# default memory budget of one chunk of text queries' maps in predict (:meth:`TrainingFreeSegmentor.queries_per_chunk`):
# the paper benchmarks' vocabularies (21-171 queries) on their 448-short-side inputs in 1-3 chunks
DEFAULT_SCORE_BUDGET_MB = 256


def patch_padding(h: int, w: int, patch: int):
    """(left, right, top, bottom) zero padding that makes an h x w window a multiple of the patch size, split
    evenly with the extra pixel right / bottom (ProxyCLIP's ``compute_padsize``)."""
    dw, dh = -w % patch, -h % patch
    return dw // 2, dw - dw // 2, dh // 2, dh - dh // 2


def slide_windows(h: int, w: int, crop_size, stride) -> List[Tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of mmseg's ``slide_inference`` grid on an h x w input, in its order (rows, then
    columns); the last window of a row / column is shifted back to end at the border, so every window is
    min(crop, h) x min(crop, w)."""
    (h_crop, w_crop), (h_stride, w_stride) = crop_size, stride
    boxes = []
    for i in range(max(h - h_crop + h_stride - 1, 0) // h_stride + 1):
        for j in range(max(w - w_crop + w_stride - 1, 0) // w_stride + 1):
            y2, x2 = min(i * h_stride + h_crop, h), min(j * w_stride + w_crop, w)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


def window_activation_bytes(tokens: int, width: int, num_heads: int, element_size: int = 4) -> int:
    """Estimated peak activation memory of one window through a ViT at inference: the residual stream, q/k/v and
    the 4x MLP hidden layer (8 x tokens x width) plus one attention matrix per head (heads x tokens^2). Within
    ~25 % of the measured peaks in docs/benchmarks.md (ViT-B/16, 197-1765 tokens)."""
    return element_size * (8 * tokens * width + num_heads * tokens * tokens)


@MODELS.register_module()
class TrainingFreeSegmentor(ClassVocabularyMixin, EncoderDecoder):
    """mmseg segmentor: DeCLIPViT dense features x class-name text embeddings, no training.

    Args:
        backbone (dict | nn.Module): DeCLIPViT config (or a built DeCLIPViT).
        text_encoder (dict): OpenCLIPTextEncoder config (same open_clip model; the ORIGINAL CLIP weights, since
            DeCLIP keeps the text tower frozen).
        class_names (str | Sequence[str]): list, bundled list name or file (synonyms separated by ';').
        logit_scale (float): the scale of the cosine logits (40; 80 for VOC21), applied at the original size.
            Defaults to 40.0.
        bg_thresh (float): pixels whose highest class probability is below it get ``bg_index`` (0 = off).
            Defaults to 0.0.
        bg_index (int): the background class index (VOC21, PC60, COCO-Object: 0). Defaults to 0.
        mode (str, optional): DeCLIPViT mode used for the dense features; None = the backbone's. Defaults to None.
        test_cfg (dict): mmseg test settings: mode 'slide' (crop_size, stride) or 'whole'. Slide only:
            ``window_budget_mb`` (default 1024), the estimated activation memory one batched backbone forward may
            use, and ``window_batch`` (default None = no cap), the most windows (times images) per forward;
            ``window_batch=1`` is the one-window-at-a-time path. Both modes: ``score_budget_mb`` (default 256),
            the memory of one chunk of text queries' maps in :meth:`predict`, and ``query_chunk`` (default None =
            no cap), the most queries per chunk.
            Defaults to ``dict(mode='slide', crop_size=(336, 336), stride=(112, 112))``.
        data_preprocessor (dict, optional): mmseg data preprocessor config (e.g. ``SegDataPreProcessor`` with CLIP
            mean / std). Defaults to None.
        init_cfg (dict, optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self, backbone: dict, text_encoder: dict, class_names: Union[str, Sequence[str]],
                 logit_scale: float = SEGMENTATION_PROTOCOL.logit_scale, bg_thresh: float = 0.0, bg_index: int = 0,
                 mode: Optional[str] = None, test_cfg: dict = SEGMENTATION_PROTOCOL.test_cfg(),
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # a built DeCLIPViT may be passed (the distiller evaluates its student this way)
        self.backbone = backbone if isinstance(backbone, torch.nn.Module) else MODELS.build(backbone)
        self.init_class_vocabulary(text_encoder, class_names, self.backbone.model_name)
        self.num_classes = len(self.class_names)
        self.out_channels = len(self.text_embeddings)          # the slide buffers hold one map per query
        if not 0 <= bg_index < self.num_classes:
            raise ValueError(f'bg_index {bg_index} outside the {self.num_classes} classes')
        self.logit_scale, self.bg_thresh, self.bg_index, self.mode = logit_scale, bg_thresh, bg_index, mode
        self.align_corners = False
        self.test_cfg = ConfigDict(test_cfg)
        self.windows_per_forward(1, 1)                         # check the window settings now, not at test time
        self.queries_per_chunk(1, (1, 1), (1, 1), 1)           # and the chunk settings
        self.train_cfg = None
        self.decode_head = None

    def set_class_vocabulary(self, classes, bg_index: int = 0) -> None:
        """A new vocabulary (``ClassEmbeddings``) and its background index (used only with ``bg_thresh`` > 0)."""
        if not 0 <= bg_index < classes.num_classes:
            raise ValueError(f'bg_index {bg_index} outside the {classes.num_classes} classes')
        super().set_class_vocabulary(classes)
        self.num_classes = len(self.class_names)
        self.out_channels = len(self.text_embeddings)
        self.bg_index = bg_index

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """Windows (B, 3, h, w) -> query cosines (B, S, h, w): padded to the patch size, dense features,
        cosine with every query, bilinear to the padded window, padding cut off."""
        return self.window_cosines(self.window_dense(inputs), inputs.shape[-2:])

    def window_dense(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (B, 3, h, w) -> L2-normalised dense features (B, D, ceil(h/p), ceil(w/p)) of the windows
        zero-padded to a multiple of the patch size p (:func:`patch_padding`)."""
        h, w = windows.shape[-2:]
        padded = F.pad(windows, patch_padding(h, w, self.backbone.patch_size))
        return self.backbone.extract_dense(padded, mode=self.mode)

    def window_cosines(self, dense: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Dense features of padded h x w windows (B, D, gh, gw) -> query cosines (B, S, h, w): cosine with
        every query, bilinear to the padded window, padding cut off (:meth:`resize_window`)."""
        return self.resize_window(self.class_embeddings.query_cosines(dense), size)

    def resize_window(self, cosines: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Query cosines (B, c, gh, gw) of padded h x w windows -> (B, c, h, w): bilinear to the padded window,
        padding cut off. Channel by channel, so any slice of the queries gives the same numbers."""
        h, w = size
        left, right, top, bottom = patch_padding(h, w, self.backbone.patch_size)
        cosines = F.interpolate(cosines, size=(top + h + bottom, left + w + right), mode='bilinear',
                                align_corners=False)
        return cosines[..., top:top + h, left:left + w]

    def windows_per_forward(self, h: int, w: int) -> int:
        """How many h x w windows one backbone forward takes: the memory budget over
        :func:`window_activation_bytes` of one padded window, capped by ``window_batch``; at least 1."""
        p = self.backbone.patch_size
        tokens = math.ceil(h / p) * math.ceil(w / p) + 1
        weights = next(self.backbone.parameters(), None)              # none: a runtime's float32 graph
        element_size = 4 if weights is None else weights.element_size()
        per_window = window_activation_bytes(tokens, self.backbone.width, self.backbone.num_heads, element_size)
        return self._units_in_budget('window_budget_mb', DEFAULT_WINDOW_BUDGET_MB, 'window_batch', per_window)

    def queries_per_chunk(self, batch: int, input_hw: Tuple[int, int], window_hw: Tuple[int, int],
                          output_pixels: int) -> int:
        """How many text queries one chunk of :meth:`predict` scores: ``score_budget_mb`` over one query's float32
        maps (the canvas at the input size and one window per image, three maps at the largest output size),
        capped by ``query_chunk``; at least 1."""
        per_query = 4 * (batch * (input_hw[0] * input_hw[1] + window_hw[0] * window_hw[1]) + 3 * output_pixels)
        return self._units_in_budget('score_budget_mb', DEFAULT_SCORE_BUDGET_MB, 'query_chunk', per_query)

    def _units_in_budget(self, budget_key: str, default_mb: float, cap_key: str, unit_bytes: int) -> int:
        """How many units of ``unit_bytes`` fit in ``test_cfg[budget_key]`` MB (checked: a positive number),
        capped by ``test_cfg[cap_key]`` (checked: a positive int or None); at least 1."""
        budget_mb = self.test_cfg.get(budget_key, default_mb)
        cap = self.test_cfg.get(cap_key, None)
        if isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or not budget_mb > 0:
            raise ValueError(f'test_cfg.{budget_key} must be a positive number (MB), got {budget_mb!r}')
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f'test_cfg.{cap_key} must be a positive int or None, got {cap!r}')
        fits = max(1, int(budget_mb * 2 ** 20 // unit_bytes))
        return fits if cap is None else min(fits, cap)

    def window_grid_cosines(self, inputs: torch.Tensor) -> List[Tuple[Tuple[int, int, int, int], torch.Tensor]]:
        """Inputs (B, 3, H, W) -> [((y1, y2, x1, x2), query cosines (B, S, gh, gw) at the patch grid), ...] of every
        window: slide mode, the windows of :func:`slide_windows` through :meth:`window_dense` in groups of
        :meth:`windows_per_forward` (window-major, image-minor), in the grid's order; whole mode, the whole input.
        At the patch grid all S queries are small (2000 queries x 21 x 21 patches: 3.5 MB a window)."""
        batch, _, height, width = inputs.shape
        cosines = self.class_embeddings.query_cosines
        if self.test_cfg.get('mode', 'whole') != 'slide':
            return [((0, height, 0, width), cosines(self.window_dense(inputs)))]
        boxes = slide_windows(height, width, self.test_cfg.crop_size, self.test_cfg.stride)
        y1, y2, x1, x2 = boxes[0]
        group = max(1, self.windows_per_forward(y2 - y1, x2 - x1) // batch)
        windows = []
        for start in range(0, len(boxes), group):
            chunk = boxes[start:start + group]
            dense = self.window_dense(torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk]))
            windows.extend((box, cosines(window)) for box, window in zip(chunk, dense.split(batch)))
        return windows

    def query_maps(self, windows, inputs: torch.Tensor, queries: slice = slice(None)) -> torch.Tensor:
        """:meth:`window_grid_cosines` of ``inputs`` -> window-averaged cosines (B, c, H, W) of the queries ``queries``:
        each window's cosines (:meth:`resize_window`) summed into the canvas in the grid's order, then divided by
        the coverage."""
        batch, _, height, width = inputs.shape
        channels = len(range(self.out_channels)[queries])
        preds = inputs.new_zeros((batch, channels, height, width))
        count = inputs.new_zeros((batch, 1, height, width))
        for (y1, y2, x1, x2), window in windows:
            preds[:, :, y1:y2, x1:x2] += self.resize_window(window[:, queries], (y2 - y1, x2 - x1))
            count[:, :, y1:y2, x1:x2] += 1
        return preds.div_(count)

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """mmseg's ``slide_inference`` with the windows batched through the backbone: inputs (B, 3, H, W) ->
        window-averaged query cosines (B, S, H, W) of all queries (:meth:`window_grid_cosines`, :meth:`query_maps`)."""
        return self.query_maps(self.window_grid_cosines(inputs), inputs)

    def predict(self, inputs: torch.Tensor, data_samples=None):
        """mmseg's ``predict`` (:meth:`slide_inference` or ``whole_inference``, then :meth:`postprocess_result`)
        with the text queries in chunks of :meth:`queries_per_chunk`: the backbone runs once; per chunk,
        :meth:`query_maps`, then per image :meth:`output_logits` into its ``ChunkedClassProbabilities``."""
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=inputs.shape[2:])) for _ in inputs]
        windows = self.window_grid_cosines(inputs)
        y1, y2, x1, x2 = windows[0][0]
        out_pixels = max(math.prod(s.metainfo['ori_shape'][:2]) for s in data_samples)
        per_chunk = self.queries_per_chunk(len(inputs), inputs.shape[-2:], (y2 - y1, x2 - x1), out_pixels)
        probs = [self.class_embeddings.chunked_class_probabilities() for _ in data_samples]
        for start in range(0, self.out_channels, per_chunk):
            queries = slice(start, min(start + per_chunk, self.out_channels))
            maps = self.query_maps(windows, inputs, queries)
            for cosines, sample, image_probs in zip(maps, data_samples, probs):
                image_probs.add(self.output_logits(cosines, sample.metainfo), queries)
            del maps
        for sample, image_probs in zip(data_samples, probs):
            self.set_prediction(sample, image_probs.result())
        return data_samples

    def output_logits(self, cosines: torch.Tensor, meta: dict) -> torch.Tensor:
        """One image's query cosines (c, H, W) of the network input -> logits (c, H0, W0): padding removed,
        un-flipped, bilinear to ``ori_shape``, times the logit scale."""
        H, W = cosines.shape[-2:]
        left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
        cosines = cosines[None, :, top:H - bottom, left:W - right]
        if meta.get('flip'):
            cosines = cosines.flip(dims=(3,) if meta.get('flip_direction') == 'horizontal' else (2,))
        cosines = F.interpolate(cosines, size=tuple(meta['ori_shape'][:2]), mode='bilinear', align_corners=False)[0]
        return cosines.mul_(self.logit_scale)

    def set_prediction(self, sample, probs: torch.Tensor) -> None:
        """Class probabilities (K, H0, W0) -> ``seg_logits`` and the labels (the background threshold) as
        ``pred_sem_seg`` of ``sample``."""
        best, labels = probs.max(dim=0, keepdim=True)
        if self.bg_thresh > 0:
            labels[best < self.bg_thresh] = self.bg_index
        sample.set_data(dict(seg_logits=PixelData(data=probs), pred_sem_seg=PixelData(data=labels)))

    def postprocess_result(self, seg_logits: torch.Tensor, data_samples=None):
        """Query cosines (B, S, H, W) of the network input -> per image: padding removed, un-flipped, bilinear
        to ``ori_shape``, scaled, class probabilities (K, H0, W0) as ``seg_logits``, labels as ``pred_sem_seg``."""
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=seg_logits.shape[-2:])) for _ in seg_logits]
        for cosines, sample in zip(seg_logits, data_samples):
            logits = self.output_logits(cosines, sample.metainfo)
            self.set_prediction(sample, self.class_embeddings.class_probabilities(logits, dim=0))
        return data_samples

    def extract_feat(self, inputs: torch.Tensor):
        return self.backbone(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError('TrainingFreeSegmentor is training-free; use tools/test.py')

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs, None)
