"""User vocabularies: ``"cat,dog,sofa; couch"``, a list, or a file, with an explicitly named background.

Rules (docs/inference.md):

* a string is read as a file only when such a file exists; a string that looks like a path (it ends in
  ``.txt`` / ``.csv`` / ``.json`` / ``.names``, or contains a path separator) and does not exist is an error;
  anything else is comma-separated class names, so ``"cat"`` is the one class 'cat'; one trailing comma is
  allowed and makes any string class names: ``"AC/DC,"`` is the one class 'AC/DC' (not a missing file);
* a file holds one class per line (``#`` lines are comments), or comma-separated names;
* ``bundled:NAME`` is one of the bundled benchmark lists (``bundled:voc21``, ``bundled:ade20k``, ...;
  ``declip_mm/vocabularies/class_names/``);
* a class may list synonyms separated by ``;`` (``"sofa; couch"``): all of them are text queries of one class,
  shown by the first;
* an empty vocabulary, an empty class (``"cat,,dog"``) and a name given twice (also as a synonym of another
  class; compared case- and space-insensitively, as CLIP's tokenizer lower-cases) are errors;
* the background is never inferred from position: ``background=None`` means there is none (no confidence
  threshold), ``background='NAME'`` makes the class NAME the background (the class whose synonyms include
  NAME, or a new last class NAME when the vocabulary has none): it gets the low-confidence pixels.
"""
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

from ..constants import SYNONYM_SEPARATOR
from ..vocabularies import bundled, bundled_file

PATH_SUFFIXES = ('.txt', '.csv', '.json', '.names', '.lst')
BUNDLED_PREFIX = 'bundled:'


class VocabularyError(ValueError):
    """A vocabulary that cannot be used (empty, duplicated, a missing file); the message names the problem."""


class Vocabulary(NamedTuple):
    """K classes: ``classes`` as the text tower reads them (synonyms joined by '; '), ``names`` their first
    synonyms (what results show), ``background_index`` the named background's index or None."""
    classes: List[str]
    names: List[str]
    background_index: Optional[int]

    @property
    def background(self) -> Optional[str]:
        return None if self.background_index is None else self.names[self.background_index]

    def __len__(self):
        return len(self.classes)


def _normalise(name: str) -> str:
    return ' '.join(name.lower().split())


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(PATH_SUFFIXES) or os.sep in spec or (os.altsep or os.sep) in spec


def read_vocabulary_spec(spec: Union[str, Sequence[str]]) -> List[str]:
    """The raw class strings of a vocabulary spec (a list, a file, ``bundled:NAME`` or comma-separated names)."""
    if not isinstance(spec, str):
        items = list(spec)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise VocabularyError(f'vocabulary entry {i} is {type(item).__name__}, not a class name string')
        return items
    text = spec.strip()
    if text.startswith(BUNDLED_PREFIX):
        name = text[len(BUNDLED_PREFIX):]
        path = bundled_file(name)
        if path is None:
            raise VocabularyError(f"no bundled vocabulary '{name}' (bundled: {', '.join(bundled())})")
        return _read_file(path)
    path = Path(text).expanduser()
    if text and path.is_file():
        return _read_file(path)
    if text and path.is_dir():
        raise VocabularyError(f"vocabulary '{spec}' is a folder, not a class-name file")
    if _looks_like_path(text) and ',' not in text:
        raise VocabularyError(f"vocabulary file not found: '{spec}' (to use it as a class name, put a comma "
                              f"after it: '{text},')")
    return _split_names(text)


def _split_names(text: str) -> List[str]:
    """Comma-separated names; one trailing comma ends the list ('AC/DC,' is the one class 'AC/DC')."""
    items = text.split(',')
    return items[:-1] if len(items) > 1 and not items[-1].strip() else items


def _read_file(path: Path) -> List[str]:
    try:
        raw = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise VocabularyError(f'cannot read vocabulary file {path}: {err}') from err
    lines = [ln.strip() for ln in raw.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith('#')]
    if len(lines) == 1 and ',' in lines[0]:
        return _split_names(lines[0])
    return lines


def parse_vocabulary(spec: Union[str, Sequence[str]], background: Optional[str] = None) -> Vocabulary:
    """A checked :class:`Vocabulary` from a spec (module doc) and an optional background class name."""
    raw = read_vocabulary_spec(spec)
    where = f"vocabulary {spec!r}" if isinstance(spec, str) else 'vocabulary'
    if not any(item.strip() for item in raw):
        raise VocabularyError(f'{where} is empty: give at least one class name, e.g. "cat,dog"')
    classes, names, seen = [], [], {}
    for i, item in enumerate(raw):
        synonyms = [s.strip() for s in item.split(SYNONYM_SEPARATOR)]
        if not item.strip() or not all(synonyms):
            raise VocabularyError(f'{where}: class {i + 1} ({item!r}) has an empty name')
        for synonym in synonyms:
            key = _normalise(synonym)
            if key in seen:
                first = seen[key]
                also = '' if first == len(classes) else f" (class {first + 1}, '{names[first]}')"
                raise VocabularyError(f"{where}: '{synonym}' is given twice{also}; each name may appear once")
            seen[key] = len(classes)
        classes.append(f'{SYNONYM_SEPARATOR} '.join(synonyms))
        names.append(synonyms[0])
    background_index = None
    if background is not None:
        name = background.strip()
        if not name or SYNONYM_SEPARATOR in name or ',' in name:
            raise VocabularyError(f'background must be one class name, got {background!r}')
        background_index = seen.get(_normalise(name))
        if background_index is None:
            classes.append(name)
            names.append(name)
            background_index = len(classes) - 1
    return Vocabulary(classes, names, background_index)


def vocabulary_summary(vocabulary: Vocabulary) -> Dict:
    return dict(classes=vocabulary.classes, names=vocabulary.names, background=vocabulary.background)
