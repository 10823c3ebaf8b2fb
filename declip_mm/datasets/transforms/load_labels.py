"""``LoadFullRangeAnnotations``: mmseg's ``LoadAnnotations`` without its cast to uint8.

mmseg 1.2.2's ``LoadAnnotations._load_seg_map`` decodes the label file and then calls ``.astype(np.uint8)``. The
A-847 and PC-459 labels that CAT-Seg's ``datasets/prepare_ade20k_full.py`` / ``prepare_pascal_context_459.py``
@6d3a188 write are 16-bit TIFFs (PIL mode ``I;16``, classes 0..846 / 0..458, ignore 65535 / 459): the cast folds
class 256 onto 0, 459 onto 203 and the ignore value 65535 onto 255, a class. Here the decoded array keeps its
integer type (uint8 stays uint8, so 8-bit benchmarks load exactly as before; uint16 stays uint16; other integer
types become int32), and everything after the decode is mmseg's, made safe for wide labels:

- ``reduce_zero_label``: for uint8, mmseg's code unchanged (0 -> 255, the rest - 1). For wider labels, 0 -> the
  ignore index and the rest - 1; a class that would land on the ignore index is an error.
- ``label_map`` (mmseg datasets with custom classes): applied as mmseg does; mmseg marks dropped classes with 255,
  which for wide labels becomes the ignore index (255 can be a class there).
- a check: when the number of classes is known (``num_classes`` here, or ``num_classes`` in the sample, which
  :class:`LabelFolderSegDataset` provides), every value must be a class or the ignore index (``ignore_index`` here,
  or the sample's, else 255); any other value raises ``ValueError`` naming the file and the values, instead of
  reaching the metric as a wrong class.

Decoded with PIL by default (as detectron2's ``SemSegEvaluator`` reads the labels: ``np.asarray(Image.open(f))``);
``imdecode_backend='cv2'`` gives the same values for these files (``IMREAD_UNCHANGED``). Multi-channel label files
are refused (mmseg would cast an RGB label to a (H, W, 3) uint8 map).
"""
from typing import Optional

import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations

from ...registry import TRANSFORMS

# the keys :class:`LabelFolderSegDataset` adds to each sample for the check
NUM_CLASSES_KEY = 'num_classes'
IGNORE_INDEX_KEY = 'ignore_index'


def decode_label_array(raw: np.ndarray, path: str = '<array>') -> np.ndarray:
    """A decoded label file -> (H, W) integer array that keeps every value: bool -> uint8, uint8 / uint16 unchanged,
    other integers (and integral floats) -> int32 (OpenCV resizes int32 with nearest neighbours, not int64)."""
    label = np.asarray(raw)
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[..., 0]
    label = label.squeeze() if label.ndim > 2 else label
    if label.ndim != 2:
        raise ValueError(f'label file {path}: expected a single-channel label map, got shape {raw.shape} '
                         f'(an RGB or palette-converted label is not a class-index map)')
    if label.dtype == np.bool_:
        return label.astype(np.uint8)
    if label.dtype in (np.uint8, np.uint16):
        return label
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            raise ValueError(f'label file {path}: {label.dtype} values that are not integers')
    elif not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f'label file {path}: unsupported label dtype {label.dtype}')
    info = np.iinfo(np.int32)
    if label.size and (label.min() < info.min or label.max() > info.max):
        raise ValueError(f'label file {path}: values {label.min()}..{label.max()} do not fit int32')
    return label.astype(np.int32)


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, path: str = '<array>') -> None:
    """Every value must be a class (0 .. num_classes - 1) or ``ignore_index``; otherwise ``ValueError`` naming
    ``path`` and the offending values (never folded into a class)."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        shown = ', '.join(str(v) for v in bad[:10]) + (' ...' if bad.size > 10 else '')
        raise ValueError(f'label file {path}: values {shown} are neither one of the {num_classes} classes '
                         f'(0..{num_classes - 1}) nor the ignore index {ignore_index} (dtype {label.dtype}; '
                         f'was the file written for another class list or ignore value?)')


def _widen_for(label: np.ndarray, values) -> np.ndarray:
    """int32 when some of ``values`` does not fit ``label``'s type (e.g. -1 into uint16)."""
    info = np.iinfo(label.dtype)
    if any(v < info.min or v > info.max for v in values):
        return label.astype(np.int32)
    return label


@TRANSFORMS.register_module()
class LoadFullRangeAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` keeping the label file's full range (module doc).

    Args (besides mmseg's ``reduce_zero_label``, ``backend_args``, ``imdecode_backend``):
        num_classes: the dataset's class count for the value check; None: the sample's ``num_classes`` (set by
            :class:`LabelFolderSegDataset`), no check when neither is set.
        ignore_index: the ignore value for the check and for ``reduce_zero_label`` on wide labels; None: the
            sample's ``ignore_index``, else 255.
    """

    def __init__(self, reduce_zero_label=None, num_classes: Optional[int] = None,
                 ignore_index: Optional[int] = None, backend_args=None, imdecode_backend: str = 'pillow') -> None:
        super().__init__(reduce_zero_label=reduce_zero_label, backend_args=backend_args,
                         imdecode_backend=imdecode_backend)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        raw = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), flag='unchanged',
                               backend=self.imdecode_backend)
        gt = decode_label_array(raw, path)
        ignore = self.ignore_index if self.ignore_index is not None else results.get(IGNORE_INDEX_KEY, 255)
        wide = gt.dtype != np.uint8

        # reduce zero_label (mmseg's assertion kept)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        assert self.reduce_zero_label == results['reduce_zero_label'], \
            'Initialize dataset with `reduce_zero_label` as ' \
            f'{results["reduce_zero_label"]} but when load annotation ' \
            f'the `reduce_zero_label` is {self.reduce_zero_label}'
        if self.reduce_zero_label and not wide:     # mmseg's code, unchanged
            gt[gt == 0] = 255
            gt = gt - 1
            gt[gt == 254] = 255
        elif self.reduce_zero_label:
            if np.any(gt == ignore + 1):
                raise ValueError(f'label file {path}: reduce_zero_label would turn class {ignore + 1} into the '
                                 f'ignore index {ignore}')
            gt = _widen_for(gt, [ignore])           # (the wrapped 0 - 1 is overwritten)
            zero = gt == 0
            gt = gt - 1
            gt[zero] = ignore

        # modify if custom classes (mmseg's; its "dropped class" value 255 is the ignore index for wide labels)
        label_map = results.get('label_map', None)
        if label_map is not None:
            if wide:
                label_map = {old: (ignore if new == 255 else new) for old, new in label_map.items()}
                gt = _widen_for(gt, list(label_map.values()))
            gt_copy = gt.copy()
            for old_id, new_id in label_map.items():
                gt[gt_copy == old_id] = new_id

        num_classes = self.num_classes if self.num_classes is not None else results.get(NUM_CLASSES_KEY)
        if num_classes is not None:
            check_label_values(gt, int(num_classes), int(ignore), path)
        results['gt_seg_map'] = gt
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(reduce_zero_label={self.reduce_zero_label}, '
                f'num_classes={self.num_classes}, ignore_index={self.ignore_index}, '
                f"imdecode_backend='{self.imdecode_backend}', backend_args={self.backend_args})")
