"""Class names in any script on the overlays: Chinese, Japanese, Korean, emoji, accented Latin.

PIL's default font (``ImageFont.load_default()``) has ASCII and little else: '猫', 'ねこ', '🐱' and even 'é' would be
drawn as empty boxes. :func:`draw_text` draws a text the default font has entirely with it (so ASCII names look as
they always have); any other text with a font found on this machine at run time:

1. the font files named in ``$DECLIP_MM_FONTS`` (separated by ``os.pathsep``), in that order;
2. Noto Color Emoji: emoji, in colour (fonts-noto-color-emoji; a bitmap font, drawn at its size and scaled to the
   line);
3. DejaVu Sans: Latin, Greek, Cyrillic, symbols (Debian's fonts-dejavu-core, or matplotlib's own copy);
4. Noto Sans CJK: Chinese, Japanese, Korean (fonts-noto-cjk).

A text is drawn in the first of these fonts that has all its characters; otherwise character by character, each in
the first font that has it. Which characters a font has is read from its character map (fontTools). A character
that no font here has is drawn as the default font's box, and a :class:`MissingGlyphWarning` names it and the
packages to install.
"""
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

FONT_ENV = 'DECLIP_MM_FONTS'
FONT_DIRS = ('/usr/share/fonts', '/usr/local/share/fonts', '~/.local/share/fonts', '~/.fonts', '/Library/Fonts',
             '/System/Library/Fonts')
# searched in this order: (file name, what it draws, what installs it)
FALLBACK_FONTS = (
    ('NotoColorEmoji.ttf', 'emoji', 'fonts-noto-color-emoji'),
    ('DejaVuSans.ttf', 'Latin, Greek, Cyrillic, symbols', 'fonts-dejavu-core, or matplotlib'),
    ('NotoSansCJK-Regular.ttc', 'Chinese, Japanese, Korean', 'fonts-noto-cjk'),
)
INSTALL_HINT = ('install fonts that have them, e.g. `apt-get install fonts-noto-cjk fonts-noto-color-emoji` '
                f'(Chinese, Japanese, Korean, emoji), or name font files in ${FONT_ENV}')
TEXT_SIZE = 11                   # pixels of the fallback fonts' em (the default font's is 10; overlay rows are 18)
BITMAP_STRIKE = 109              # the one size a colour bitmap font (Noto Color Emoji's CBDT) loads at


class MissingGlyphWarning(UserWarning):
    """No font found on this machine has some characters of a text drawn on an overlay: they show as boxes."""


@dataclass(frozen=True)
class Face:
    """A font file loaded for drawing: ``chars`` the code points of its character map; ``scale`` the drawn size over
    the loaded size (below 1 for a bitmap font loaded at its strike size); ``color`` its glyphs carry their colours."""
    path: str
    font: object = field(repr=False)
    chars: frozenset = field(repr=False)
    scale: float = 1.0
    color: bool = False

    def covers(self, ch: str) -> bool:
        return ord(ch) in self.chars


def matplotlib_font_dir() -> Optional[Path]:
    """matplotlib's bundled fonts (DejaVu), found without importing matplotlib."""
    from importlib.util import find_spec
    spec = find_spec('matplotlib')
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / 'mpl-data' / 'fonts' / 'ttf'
    return folder if folder.is_dir() else None


def find_font_file(name: str) -> Optional[str]:
    """The first file called ``name`` in the system font folders, then matplotlib's."""
    folders = [Path(d).expanduser() for d in FONT_DIRS] + [matplotlib_font_dir()]
    for folder in folders:
        if folder is not None and folder.is_dir():
            hits = sorted(folder.rglob(name))
            if hits:
                return str(hits[0])
    return None


def load_face(path: str, size: int = TEXT_SIZE) -> Optional[Face]:
    """A :class:`Face` of the font file ``path`` (the first face of a collection), or None when it cannot be read."""
    from PIL import ImageFont
    try:
        from fontTools.ttLib import TTFont
        with TTFont(path, fontNumber=0, lazy=True) as tt:
            chars = frozenset(tt.getBestCmap() or ())
            color = any(tag in tt for tag in ('CBDT', 'sbix', 'COLR'))
    except Exception:                                     # noqa: BLE001 (no fontTools, not a font, unreadable)
        return None
    try:
        return Face(path, ImageFont.truetype(path, size), chars, 1.0, color)
    except OSError:                                       # a bitmap font: only its strike size loads
        try:
            return Face(path, ImageFont.truetype(path, BITMAP_STRIKE), chars, size / BITMAP_STRIKE, color)
        except OSError:
            return None


@lru_cache(maxsize=None)
def fallback_faces() -> Tuple[Face, ...]:
    """The fonts found on this machine, in the order of the module doc (looked up once per process)."""
    paths = [p for p in os.environ.get(FONT_ENV, '').split(os.pathsep) if p]
    paths += [path for path in (find_font_file(name) for name, _, _ in FALLBACK_FONTS) if path]
    faces = (load_face(p) for p in dict.fromkeys(paths))
    return tuple(face for face in faces if face is not None)


@lru_cache(maxsize=None)
def _default_font():
    from PIL import ImageFont
    return ImageFont.load_default()


def _mask(font, ch: str):
    mask = font.getmask(ch)
    return mask.size, bytes(mask)


@lru_cache(maxsize=4096)
def default_font_has(ch: str) -> bool:
    """Whether PIL's default font has ``ch``: its drawing differs from that of a code point no font has (the box)."""
    font = _default_font()
    return _mask(font, ch) != _mask(font, '\U0010ffff')


def _joins_previous(ch: str) -> bool:
    """Combining marks, joiners and variation selectors (and emoji skin tones) belong to the character before."""
    return unicodedata.category(ch) in ('Mn', 'Me', 'Cf') or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _runs(text: str, faces, missing: List[str]) -> List[List]:
    """``text`` in the first of ``faces`` that has all of it, else character by character (module doc); the
    characters none has are added to ``missing``."""
    if all(default_font_has(c) for c in text):
        return [[text, None]]
    whole = next((f for f in faces if all(f.covers(c) or _joins_previous(c) for c in text)), None)
    if whole is not None:
        return [[text, whole]]
    runs: List[List] = []
    for ch in text:
        if runs and (_joins_previous(ch) or (runs[-1][1] is not None and runs[-1][1].covers(ch))):
            runs[-1][0] += ch
            continue
        face = None
        if not default_font_has(ch):
            face = next((f for f in faces if f.covers(ch)), None)
            if face is None:
                missing.append(ch)
        if runs and runs[-1][1] is face:
            runs[-1][0] += ch
        else:
            runs.append([ch, face])
    return runs


def text_runs(text: str) -> Tuple[List[Tuple[str, Optional[Face]]], str]:
    """``text`` split into (run, face) pieces to draw one after the other (face None: PIL's default font), and the
    characters no font here has (module doc). Characters a colour font has (emoji) are drawn with it; the rest in as
    few fonts as possible."""
    if all(default_font_has(c) for c in text):
        return [(text, None)], ''
    faces = fallback_faces()
    colour = [f for f in faces if f.color]
    segments: List[List] = []                       # [text, colour face or None]
    for ch in text:
        if segments and _joins_previous(ch):
            segments[-1][0] += ch
            continue
        face = None if default_font_has(ch) else next((f for f in colour if f.covers(ch)), None)
        if segments and segments[-1][1] is face:
            segments[-1][0] += ch
        else:
            segments.append([ch, face])
    runs, missing = [], []
    for segment, face in segments:
        runs += [[segment, face]] if face is not None else _runs(segment, [f for f in faces if not f.color], missing)
    return [(run, face) for run, face in runs], ''.join(dict.fromkeys(missing))


def warn_missing(text: str, missing: str) -> None:
    chars = ', '.join(f"'{c}' (U+{ord(c):04X})" for c in missing)
    warnings.warn(f'no font found on this machine has {chars} of {text!r}: drawn as boxes on the overlay; '
                  f'{INSTALL_HINT}', MissingGlyphWarning, stacklevel=3)


def draw_text(canvas, xy: Tuple[float, float], text: str, fill) -> float:
    """Draw ``text`` on the PIL image ``canvas`` with its top left at ``xy`` (as ``ImageDraw.text`` with the default
    font) in the colour ``fill``, every character in a font that has it (module doc). Returns the text's width."""
    from PIL import Image, ImageDraw
    draw = ImageDraw.Draw(canvas)
    runs, missing = text_runs(text)
    if missing:
        warn_missing(text, missing)
    x, y = xy
    default = _default_font()
    baseline = y + (default.getmetrics()[0] if hasattr(default, 'getmetrics') else TEXT_SIZE)
    for run, face in runs:
        if face is None:
            draw.text((x, y), run, fill=fill)
            x += draw.textlength(run, font=default)
        elif face.scale == 1.0 and not face.color:
            draw.text((x, baseline), run, fill=fill, font=face.font, anchor='ls')
            x += draw.textlength(run, font=face.font)
        else:                                           # colour / bitmap glyphs: drawn at their size, then scaled
            left, top, right, bottom = face.font.getbbox(run, anchor='ls')
            if right > left and bottom > top:
                glyphs = Image.new('RGBA', (right - left, bottom - top), (0, 0, 0, 0))
                ImageDraw.Draw(glyphs).text((-left, -top), run, fill=fill, font=face.font, anchor='ls',
                                            embedded_color=face.color)
                size = (max(1, round(glyphs.width * face.scale)), max(1, round(glyphs.height * face.scale)))
                glyphs = glyphs.resize(size, Image.LANCZOS)
                canvas.paste(glyphs, (round(x + left * face.scale), round(baseline + top * face.scale)), glyphs)
            x += face.font.getlength(run) * face.scale
    return x - xy[0]
