"""``LabelFolderSegDataset``: an mmseg dataset of the images that have a label file, as detectron2's
``load_sem_seg`` builds CAT-Seg's benchmarks (the d2-format folders CAT-Seg's ``datasets/prepare_*.py`` write):
every label in ``seg_map_path`` paired with the image of the same stem in ``img_path``. mmseg's ``BaseSegDataset``
instead lists the image folder, which for VOC holds 17k images for 1,449 labels.

Each sample carries the dataset's class count and ``ignore_index`` (``num_classes``, ``ignore_index``), which
``LoadFullRangeAnnotations`` (``datasets/transforms/load_labels.py``) checks every label value against: A-847 and
PC-459 labels are 16-bit (ignore 65535 / 459), and a value that is neither a class nor the ignore index raises an
error naming the file instead of becoming a wrong class."""
from pathlib import Path
from typing import List, Sequence, Union

from mmseg.datasets import BaseSegDataset

from ..registry import DATASETS
# CAT-Seg's vocabularies are bundled with every other class list (declip_mm/vocabularies/); the old names stay
from ..vocabularies import CATSEG_DIR as CATSEG_CLASS_DIR, catseg_vocabulary  # noqa: F401


@DATASETS.register_module()
class LabelFolderSegDataset(BaseSegDataset):
    """Args (besides mmseg's): ``vocabulary`` (a CAT-Seg vocabulary name, json or list: the dataset's classes),
    ``data_prefix=dict(img_path, seg_map_path)``, ``img_suffix`` / ``seg_map_suffix`` ('.jpg' / '.png'; '.tif'
    for A-847 and PC-459), ``ignore_index`` (mmseg's, default 255; 65535 for A-847, 459 for PC-459)."""

    def __init__(self, vocabulary: Union[str, Sequence[str]], **kwargs):
        metainfo = dict(kwargs.pop('metainfo', None) or {}, classes=tuple(catseg_vocabulary(vocabulary)))
        super().__init__(metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir, seg_dir = Path(self.data_prefix['img_path']), Path(self.data_prefix['seg_map_path'])
        if not seg_dir.is_dir():
            raise FileNotFoundError(f'label folder not found: {seg_dir} (see docs/catseg.md to prepare the data)')
        data_list = []
        for seg in sorted(seg_dir.glob(f'*{self.seg_map_suffix}')):
            img = img_dir / (seg.name[:-len(self.seg_map_suffix)] + self.img_suffix)
            if not img.is_file():
                raise FileNotFoundError(f'{seg} has no image {img}')
            data_list.append(dict(img_path=str(img), seg_map_path=str(seg), label_map=self.label_map,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[],
                                  num_classes=len(self._metainfo['classes']), ignore_index=self.ignore_index))
        if not data_list:
            raise FileNotFoundError(f'no *{self.seg_map_suffix} label in {seg_dir}')
        return data_list
