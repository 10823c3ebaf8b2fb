"""``LabelFolderSegDataset``: an mmseg dataset of the images that have a label file, as detectron2's
``load_sem_seg`` builds CAT-Seg's benchmarks (the d2-format folders CAT-Seg's ``datasets/prepare_*.py`` write):
every label in ``seg_map_path`` paired with the image of the same stem in ``img_path``. mmseg's ``BaseSegDataset``
instead lists the image folder, which for VOC holds 17k images for 1,449 labels.

Each sample carries the dataset's class count and ``ignore_index`` (``num_classes``, ``ignore_index``), which
``LoadFullRangeAnnotations`` (``datasets/transforms/load_labels.py``) checks every label value against: A-847 and
PC-459 labels are 16-bit (ignore 65535 / 459), and a value that is neither a class nor the ignore index raises an
error naming the file instead of becoming a wrong class."""
import json
from pathlib import Path
from typing import List, Sequence, Union

from mmseg.datasets import BaseSegDataset

from ..registry import DATASETS

CATSEG_CLASS_DIR = Path(__file__).resolve().parent / 'catseg_classes'


def catseg_vocabulary(spec: Union[str, Sequence[str]]) -> List[str]:
    """CAT-Seg's vocabularies: a list or a json list of names (synonyms ', '-separated; the FIRST is used, whatever
    the source, as DeCLIP_CATSeg's ``get_text_embeds``), or a bundled json: 'coco' (171, training), 'ade150', 'ade847', 'pc59', 'pc459', 'voc20',
    'voc20b' (``catseg_classes/``, CAT-Seg @6d3a188 ``datasets/*.json``)."""
    if not isinstance(spec, str):
        return [name.split(', ')[0] for name in spec]
    path = Path(spec)
    if not path.is_file():
        path = CATSEG_CLASS_DIR / f'{spec}.json'
    if not path.is_file():
        raise FileNotFoundError(f"CAT-Seg vocabulary '{spec}' is neither a json file nor one of "
                                f"{sorted(p.stem for p in CATSEG_CLASS_DIR.glob('*.json'))}")
    return [name.split(', ')[0] for name in json.loads(path.read_text())]


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
