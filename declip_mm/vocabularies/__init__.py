"""Every bundled class list, and the one place that finds and reads them.

    class_names/NAME.txt   one class a line ('#' lines are comments; a class's synonyms separated by ';'): the lists
                           of the training-free benchmarks (voc21, ade20k, coco_stuff, ...), COCO panoptic's 133
                           and the official LVIS v1 names
    catseg/NAME.json       CAT-Seg's vocabularies, byte-identical to CAT-Seg @6d3a188 ``datasets/*.json``: a json
                           list whose entries separate synonyms by ', ' (CAT-Seg uses the first)
    detection.py           the OV-COCO 48 / 17 split, COCO's 80, LVIS v1, and the detection heads' class specs

A bundled list is named by its kind and file stem: ``load_bundled('voc21')``, ``load_bundled('ade847', 'catseg')``.
The readers of each caller keep their own rules on top of it: :func:`load_class_names` (training-free segmentors:
a list, a file or a bundled name), :func:`catseg_vocabulary` (CAT-Seg: first synonyms), ``detection.class_names_from``
(F-ViT heads and the class-embedding tool) and ``bundled:NAME`` in users' vocabularies (``apis/vocabulary.py``).

Pure Python: the ``declip-mm`` command checks ``--vocab bundled:NAME`` before it imports torch.
"""
import json
from pathlib import Path
from typing import List, Optional, Sequence, Union

VOCABULARY_DIR = Path(__file__).resolve().parent
CLASS_NAME_DIR = VOCABULARY_DIR / 'class_names'
CATSEG_DIR = VOCABULARY_DIR / 'catseg'
KINDS = {'class_names': (CLASS_NAME_DIR, '.txt'), 'catseg': (CATSEG_DIR, '.json')}


def bundled(kind: str = 'class_names') -> List[str]:
    """The names of the bundled lists of ``kind`` ('class_names' or 'catseg'), sorted."""
    folder, suffix = KINDS[kind]
    return sorted(p.stem for p in folder.glob(f'*{suffix}'))


def bundled_file(name: str, kind: str = 'class_names') -> Optional[Path]:
    """The file of the bundled list ``name`` of ``kind``, or None when there is no such list."""
    folder, suffix = KINDS[kind]
    if not name or name in ('.', '..') or '/' in name or '\\' in name:
        return None
    path = folder / f'{name}{suffix}'
    return path if path.is_file() else None


def read_class_file(path: Union[str, Path]) -> List[str]:
    """A class-name text file: one class a line, stripped; empty lines and '#' comment lines skipped."""
    lines = (ln.strip() for ln in Path(path).read_text(encoding='utf-8').splitlines())
    return [ln for ln in lines if ln and not ln.startswith('#')]


def read_catseg_file(path: Union[str, Path]) -> List[str]:
    """A CAT-Seg vocabulary json: its entries as stored (synonyms ', '-separated)."""
    return list(json.loads(Path(path).read_text(encoding='utf-8')))


def load_bundled(name: str, kind: str = 'class_names') -> List[str]:
    """The entries of a bundled list as stored (module doc); FileNotFoundError naming the bundled lists."""
    path = bundled_file(name, kind)
    if path is None:
        raise FileNotFoundError(f"no bundled {kind} list '{name}' (bundled: {', '.join(bundled(kind))})")
    return read_catseg_file(path) if kind == 'catseg' else read_class_file(path)


def load_class_names(names: Union[str, Sequence[str]]) -> List[str]:
    """A list of names, a bundled file name ('voc21', 'ade20k', ...), or a path; '#' lines are comments."""
    if not isinstance(names, str):
        return list(names)
    path = Path(names)
    if path.is_file():
        return read_class_file(path)
    if bundled_file(names) is None:
        raise FileNotFoundError(f"class names '{names}' is neither a file nor a bundled list ({bundled()})")
    return load_bundled(names)


def catseg_vocabulary(spec: Union[str, Sequence[str]]) -> List[str]:
    """CAT-Seg's vocabularies: a list or a json list of names (synonyms ', '-separated; the FIRST is used, whatever
    the source, as DeCLIP_CATSeg's ``get_text_embeds``), or a bundled json: 'coco' (171, training), 'ade150',
    'ade847', 'pc59', 'pc459', 'voc20', 'voc20b' (``catseg/``, CAT-Seg @6d3a188 ``datasets/*.json``)."""
    if not isinstance(spec, str):
        return [name.split(', ')[0] for name in spec]
    path = Path(spec)
    if not path.is_file():
        path = bundled_file(spec, 'catseg')
    if path is None:
        raise FileNotFoundError(f"CAT-Seg vocabulary '{spec}' is neither a json file nor one of "
                                f"{bundled('catseg')}")
    return [name.split(', ')[0] for name in read_catseg_file(path)]


__all__ = ['VOCABULARY_DIR', 'CLASS_NAME_DIR', 'CATSEG_DIR', 'bundled', 'bundled_file', 'load_bundled',
           'read_class_file', 'read_catseg_file', 'load_class_names', 'catseg_vocabulary']
