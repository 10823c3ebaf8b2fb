"""A local web page for open-vocabulary segmentation: upload an image, type a vocabulary, see the overlay and the
area of every class. Standard library only (``http.server``; docs/inference.md says why), the page is plain
HTML + JS (:mod:`.web_page`).

    declip-mm serve --backbone FILE --text-weights W [--model-name NAME] [--host 127.0.0.1] [--port 8000]
                    [--device cpu|cuda] [--precision auto|fp32|bf16|fp16] [--example-image FILE] [limits ...]
    declip-mm serve --random-weights ...               (random towers, for trying the page: a banner says so)
    python -m declip_mm.apis.web_app ...               (the same)

then open http://127.0.0.1:8000/ (``/?example=1`` segments the example photo at once).

HTTP interface (JSON in, JSON out):

* ``GET /`` the page; ``GET /api/info`` ``{"model", "random_weights", "max_pixels", "max_upload_mb"}``;
* ``GET /api/example`` ``{"image": data URL, "vocabulary": str, "background": str or null}`` (the example photo:
  ``--example-image``, else the first sample VOC photo of ``tools/fetch_sample_data.py`` when it is laid out);
* ``POST /api/segment`` (``Content-Type: application/json``) with ``{"image": data URL or plain base64 of an image
  file, "vocabulary": "cat, dog, sofa; couch", "background": "NAME" or null}``: 200 ``{"class_names",
  "background", "areas": [[name, fraction], ...], "overlay": PNG data URL, "width", "height", "seconds",
  "random_weights"}`` (+ ``"warning"`` with random weights);
* ``POST /api/attention`` (same rules) with ``{"image", "click": [x, y], "shown": [width, height]}``, a click at
  (x, y) on the image shown width x height on the page: 200 ``{"point": [x, y] in the image's pixels, "token":
  [row, col], "grid": [h, w], "panels": [names], "figure": PNG data URL, "random_weights"}`` (the attention and
  affinity explorer, :mod:`.attention`; page coordinates -> pixels with :func:`.attention.page_to_pixel`, pixels
  -> token with :func:`.attention.pixel_to_token`, as the command line and the API).

Classes are separated by commas or new lines, synonyms of a class by ';' (the vocabulary is never read as a file
name here: the server must not open files a browser names). A bad request answers 4xx ``{"error": message}`` and
the page shows the message; an unexpected failure answers 500 with the exception's message; the server keeps
serving either way.

What a request must pass (each refusal is a JSON error naming the limit and its option):

* ``Host`` is this server's address, localhost, 127.0.0.1, [::1] or one of ``--allowed-hosts`` (403: a DNS-rebinding
  page cannot reach the server through its own domain name);
* a POST carries no foreign ``Origin`` (it must equal ``Host``; ``Sec-Fetch-Site`` other than same-origin/none is
  refused too): 403, so no other website can drive the server from a visitor's browser; and it is
  ``Content-Type: application/json`` (415), which a cross-origin page cannot send without a CORS preflight;
* the body is at most ``--max-upload-mb`` (413), arrives with no pause over ``--timeout`` seconds and within
  ``--request-timeout`` seconds of the connection's request (408 / dropped), and is JSON with at most
  :data:`MAX_JSON_CONTAINERS` arrays/objects nested at most :data:`MAX_JSON_DEPTH` deep (400);
* the image's header says at most ``--max-pixels`` pixels (413, read before anything is decoded);
* at most ``--max-queued`` uploads are held at once, the one being segmented included (503 beyond), and at most
  ``--max-connections`` connections are open (503 beyond). The image is decoded and segmented one request at a
  time, inside the model's lock, so concurrent uploads never decode more than one image at once.
"""
import argparse
import base64
import binascii
import io
import ipaddress
import json
import pickle
import re
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .web_page import render_page

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 32.0
DEFAULT_MAX_PIXELS = 40_000_000        # 40 MP: the phone / DSLR photos people upload; a 12000 x 12000 bomb is 144 MP
DEFAULT_TIMEOUT = 10.0                 # s without a byte from the client
DEFAULT_REQUEST_TIMEOUT = 60.0         # s for a whole request (line, headers, body) to arrive
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_QUEUED = 4
MAX_JSON_CONTAINERS = 1000             # '[' + '{' in a body: a request is one object of strings
MAX_JSON_DEPTH = 8
LOCAL_HOSTS = ('localhost', '127.0.0.1', '::1')
EXAMPLE_VOCABULARY = 'person; people, bottle, food; dish, table, wall, floor'   # fits the first VOC photo
EXAMPLE_BACKGROUND = None
RANDOM_WEIGHTS_WARNING = ('RANDOM WEIGHTS: this server runs randomly initialised towers (--random-weights), so the '
                          'overlay and the areas are noise, not a segmentation')
RANDOM_WEIGHTS_BAND = 'RANDOM WEIGHTS: results are meaningless'    # on the overlay image itself, as the CLI's
BAND_HEIGHT = 18


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status, the message says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Dropped(Exception):
    """The client stopped sending (timeout, closed connection): answer if possible, then close."""


def split_vocabulary(text) -> list:
    """Form text -> class strings: comma- or newline-separated (synonyms keep their ';'); separators at either end
    are dropped, empty classes in between are kept (the vocabulary check names them)."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise RequestError(400, f'"vocabulary" must be a string of class names, got {type(text).__name__}')
    text = text.replace('\n', ',').strip(', \t\r')
    return [item.strip() for item in text.split(',')] if text else []


def _megapixels(pixels: float) -> str:
    return f'{pixels / 1e6:.1f} MP'


def read_image_header(data, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[bytes, Tuple[int, int]]:
    """A data URL or plain base64 of an image file -> (file bytes, (width, height)) from the image's header only:
    nothing is decoded. Raises :class:`RequestError`: 400 naming the problem, 413 when the header says more than
    ``max_pixels`` pixels (a small file can claim a huge image: a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError
    if data is None or data == '':
        raise RequestError(400, 'no image in the request: choose an image file')
    if not isinstance(data, str):
        raise RequestError(400, f'"image" must be a data URL or base64 text, got {type(data).__name__}')
    if data.startswith('data:'):
        header, _, data = data.partition(',')
        if ';base64' not in header:
            raise RequestError(400, f'the image data URL is not base64-encoded ({header[:40]})')
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f'the image is not valid base64 ({err})') from err
    if not raw:
        raise RequestError(400, 'the image file is empty')
    limit = f'this server takes at most {_megapixels(max_pixels)} ({max_pixels} pixels, --max-pixels)'
    try:
        with Image.open(io.BytesIO(raw)) as img:        # lazy: reads the header, decodes nothing
            width, height = img.size
    except UnidentifiedImageError as err:
        raise RequestError(400, f'the uploaded file ({len(raw)} bytes) is not an image PIL can read '
                                '(corrupt or unknown format)') from err
    except Image.DecompressionBombError as err:        # PIL's own ceiling (2 x Image.MAX_IMAGE_PIXELS)
        claimed = re.search(r'\((\d+) pixels\)', str(err))
        size = _megapixels(int(claimed.group(1))) if claimed else 'over PIL\'s limit'
        raise RequestError(413, f'the image is {size} ({len(raw)} bytes of file); {limit}') from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(400, f'cannot read the uploaded image\'s header ({err})') from err
    if width * height > max_pixels:
        raise RequestError(413, f'the image is {width} x {height} = {_megapixels(width * height)} ({len(raw)} bytes '
                                f'of file); {limit}: scale it down first')
    return raw, (width, height)


def decode_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> 'np.ndarray':  # noqa: F821
    """Image file bytes (checked by :func:`read_image_header`) -> (H, W, 3) RGB uint8 (EXIF-rotated, any PIL mode;
    :func:`declip_mm.apis.inputs.pil_to_rgb`). Raises :class:`RequestError` (400) naming the problem. The server
    calls it inside the model's lock: one image is decoded at a time."""
    from PIL import Image, ImageOps

    from .inputs import InputError, pil_to_rgb
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.size[0] * img.size[1] > max_pixels:   # read_image_header's rule, again on what is decoded
                raise RequestError(413, f'the image is {_megapixels(img.size[0] * img.size[1])}; this server takes '
                                        f'at most {_megapixels(max_pixels)} (--max-pixels)')
            img.load()
            ImageOps.exif_transpose(img, in_place=True)     # (not a copy of a possibly 40 MP image)
            if img.mode in ('RGB', 'L', '1'):   # pil_to_rgb's result without its float copies (40 MP: 1.8 -> 0.4 GB)
                import numpy as np
                if img.mode == 'RGB':
                    return np.array(img)
                return np.repeat(np.asarray(img.convert('L'))[..., None], 3, axis=-1)    # '1' -> 0 / 255
            return pil_to_rgb(img, 'the uploaded image')
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, InputError) as err:
        raise RequestError(400, f'cannot decode the uploaded image ({err})') from err


def png_data_url(image) -> str:
    """A PIL image -> 'data:image/png;base64,...'."""
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def with_band(image, text: str = RANDOM_WEIGHTS_BAND):
    """``image`` (PIL) with ``text`` in white on a red band of :data:`BAND_HEIGHT` pixels added above it: an overlay
    of random weights saved from the page still says what it is."""
    from PIL import Image, ImageDraw
    out = Image.new('RGB', (image.width, image.height + BAND_HEIGHT), (200, 0, 0))
    out.paste(image.convert('RGB'), (0, BAND_HEIGHT))
    ImageDraw.Draw(out).text((4, 3), text, fill=(255, 255, 255))
    return out


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``{}`` is 1), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return depth


def parse_json_body(body: bytes):
    """The request body -> parsed JSON; 400 for bytes that are not UTF-8 JSON, for more than
    :data:`MAX_JSON_CONTAINERS` arrays/objects (counted on the raw bytes, before parsing: no deep recursion, no
    millions of tiny objects) and for nesting deeper than :data:`MAX_JSON_DEPTH`."""
    containers = body.count(b'[') + body.count(b'{')
    if containers > MAX_JSON_CONTAINERS:
        raise RequestError(400, f'the JSON body holds {containers} arrays/objects (brackets), more than '
                                f'{MAX_JSON_CONTAINERS}: a request is one object {{"image", "vocabulary", '
                                '"background"} of strings')
    try:
        value = json.loads(body.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f'the request body is not JSON ({err})') from err
    except RecursionError as err:                       # cannot happen under the bracket count; never a 500
        raise RequestError(400, f'the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)') from err
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(400, f'the JSON body is nested {depth} levels deep, more than {MAX_JSON_DEPTH}: a request '
                                'is one object {"image", "vocabulary", "background"} of strings')
    return value


class SegmentationService:
    """The server's work, without HTTP: request dicts -> response dicts (tested directly and through HTTP).

    Args:
        segmenter: ``segmenter(image (H, W, 3) uint8, classes, background=NAME or None)`` -> a result with
            ``class_names``, ``background``, ``areas()`` ({name: fraction}) and ``overlay()`` (PIL image), i.e.
            :class:`declip_mm.apis.OpenVocabSegmenter`.
        description: what ``/api/info`` reports as the model.
        example_image: the example photo's file (None: no example).
        max_pixels: the largest image (width x height, from its header) a request may carry.
        random_weights: the segmenter's towers are random: every answer, its overlay (a red band on top) and the
            page say so.
    """

    def __init__(self, segmenter: Callable, description: str = '', example_image: Optional[str] = None,
                 example_vocabulary: str = EXAMPLE_VOCABULARY, example_background: Optional[str] = EXAMPLE_BACKGROUND,
                 max_pixels: int = DEFAULT_MAX_PIXELS, random_weights: bool = False, explorer=None):
        self.segmenter = segmenter
        self._explorer = explorer                            # an AttentionExplorer, a callable making one, or None
        self.description = description
        self.example_image = example_image
        self.example_vocabulary, self.example_background = example_vocabulary, example_background
        self.max_pixels = int(max_pixels)
        self.random_weights = bool(random_weights)
        self._lock = threading.Lock()

    def _flag(self) -> dict:
        return dict(random_weights=True, warning=RANDOM_WEIGHTS_WARNING) if self.random_weights else \
            dict(random_weights=False)

    def info(self) -> dict:
        return dict(model=self.description, max_pixels=self.max_pixels, **self._flag())

    def page(self) -> str:
        return render_page(RANDOM_WEIGHTS_WARNING if self.random_weights else None)

    def example(self) -> dict:
        if self.example_image is None:
            raise RequestError(404, 'this server has no example photo: start it with --example-image FILE (or lay '
                                    'out the sample photos with tools/fetch_sample_data.py)')
        path = Path(self.example_image)
        suffix = path.suffix.lower().lstrip('.')
        mime = {'jpg': 'jpeg', 'jpeg': 'jpeg', 'png': 'png', 'webp': 'webp', 'gif': 'gif', 'bmp': 'bmp'}.get(suffix)
        if mime is None or not path.is_file():
            raise RequestError(404, f'example photo {path} is missing or not a jpg/png/webp/gif/bmp file')
        data = base64.b64encode(path.read_bytes()).decode('ascii')
        return dict(image=f'data:image/{mime};base64,{data}', vocabulary=self.example_vocabulary,
                    background=self.example_background)

    def segment(self, request: dict) -> dict:
        """``{"image", "vocabulary", "background"}`` -> the overlay and areas (module doc). The request and the
        image's header are checked first; decoding and segmenting run one request at a time (the lock)."""
        from .inputs import InputError
        from .vocabulary import VocabularyError
        if not isinstance(request, dict):
            raise RequestError(400, 'the request body must be a JSON object {"image": ..., "vocabulary": ...}')
        unknown = sorted(set(request) - {'image', 'vocabulary', 'background'})
        if unknown:
            raise RequestError(400, f'unknown request keys {unknown}; expected image, vocabulary, background')
        raw, _ = read_image_header(request.get('image'), self.max_pixels)     # header only: nothing decoded yet
        classes = split_vocabulary(request.get('vocabulary'))
        if not classes:
            raise RequestError(400, 'the vocabulary is empty: type class names separated by commas, e.g. "cat, dog"')
        background = request.get('background')
        if background is not None and not isinstance(background, str):
            raise RequestError(400, f'"background" must be a class name or null, got {type(background).__name__}')
        if background is not None:
            background = background.strip() or None         # an empty field means no background class
        with self._lock:                                     # one decoded image and one segmentation at a time
            start = time.perf_counter()
            image = decode_image(raw, self.max_pixels)
            del raw
            try:
                result = self.segmenter(image, classes, background=background)
                areas = result.areas()
                overlay = result.overlay()
                overlay = png_data_url(with_band(overlay) if self.random_weights else overlay)
            except (VocabularyError, InputError) as err:     # the segmenter's own checks of the request
                raise RequestError(400, str(err)) from err
            seconds = time.perf_counter() - start
        return dict(class_names=list(result.class_names), background=result.background,
                    areas=[[name, float(fraction)] for name, fraction in areas.items()],
                    overlay=overlay, width=int(image.shape[1]), height=int(image.shape[0]), seconds=seconds,
                    **self._flag())


    @property
    def explorer(self):
        """The attention explorer (built on first use when given as a factory); None: the server has none."""
        if callable(self._explorer) and not hasattr(self._explorer, 'token_of'):
            self._explorer = self._explorer()
        return self._explorer

    def attention(self, request: dict) -> dict:
        """``{"image", "click": [x, y], "shown": [width, height]}`` -> the explorer's maps at the clicked pixel
        (module doc). The click is checked against the shown size before the image is decoded."""
        from .attention import PointError, page_to_pixel
        from .inputs import InputError
        if not isinstance(request, dict):
            raise RequestError(400, 'the request body must be a JSON object {"image", "click", "shown"}')
        unknown = sorted(set(request) - {'image', 'click', 'shown'})
        if unknown:
            raise RequestError(400, f'unknown request keys {unknown}; expected image, click, shown')
        pairs = [request.get(key) for key in ('click', 'shown')]
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                for v in p) for p in pairs):
            raise RequestError(400, '"click" and "shown" must be [x, y] and [width, height] numbers (page pixels)')
        (cx, cy), shown = pairs
        raw, (width, height) = read_image_header(request.get('image'), self.max_pixels)
        try:
            x, y = page_to_pixel(cx, cy, shown, (height, width))
        except PointError as err:
            raise RequestError(400, str(err)) from err
        with self._lock:
            explorer = self.explorer
            if explorer is None:
                raise RequestError(404, 'this server has no attention explorer')
            image = decode_image(raw, self.max_pixels)
            del raw
            try:
                maps = explorer(image, [(x, y)], random_weights=self.random_weights)
                figure = maps.figure(note=RANDOM_WEIGHTS_BAND if self.random_weights else None)
            except (PointError, InputError) as err:
                raise RequestError(400, str(err)) from err
        return dict(point=[float(x), float(y)], token=list(maps.tokens[0]), grid=list(maps.grid),
                    panels=list(maps.panels), figure=png_data_url(figure), **self._flag())


def segmenter_explorer(segmenter):
    """The page's attention explorer around an :class:`OpenVocabSegmenter`'s own tower (no second copy)."""
    from .attention import AttentionExplorer
    return AttentionExplorer.from_backbone(segmenter.model.backbone, segmenter.device, segmenter.precision)


def host_name(value: str) -> str:
    """A Host header or address -> the bare lower-case name: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    value = value.strip().lower()
    if value.startswith('['):
        value = value[1:value.find(']')] if ']' in value else value[1:]
    elif value.count(':') == 1:
        value = value.split(':', 1)[0]
    return value.rstrip('.')


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> frozenset:
    """The Host names a server bound to ``host`` answers: the bound address (not a wildcard one), localhost,
    127.0.0.1, ::1 and ``extra``."""
    names = set(LOCAL_HOSTS) | {host_name(name) for name in extra if name.strip()}
    if host and host_name(host) not in ('0.0.0.0', '::', ''):
        names.add(host_name(host))
    return frozenset(names)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET / (the page), GET /api/info, GET /api/example, POST /api/segment to :class:`SegmentationService`,
    after the checks of the module doc."""
    service: SegmentationService = None
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2 ** 20)
    allowed_hosts: frozenset = frozenset(LOCAL_HOSTS)
    timeout = DEFAULT_TIMEOUT                   # socketserver: the socket's timeout, i.e. the idle limit per read/write
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    queue: threading.BoundedSemaphore = None
    max_queued: int = DEFAULT_MAX_QUEUED
    server_version = 'declip-mm-web'

    def log_message(self, fmt, *args):                  # one short line per request on stderr
        sys.stderr.write(f'[declip-mm serve] {self.address_string()} {fmt % args}\n')

    # ------------------------------------------------------------ the whole request must arrive in time
    def handle_one_request(self):
        self._deadline = threading.Timer(self.request_timeout, self._expire)
        self._deadline.daemon = True
        self._expired = False
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _expire(self):
        """The request did not arrive within --request-timeout: stop reading (a blocked read returns end of file)."""
        self._expired = True
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _arrived(self):
        """The request is read: the time it then takes to answer is not the client's."""
        self._deadline.cancel()

    # ------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes, content_type: str, headers: Sequence[Tuple[str, str]] = ()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('X-Frame-Options', 'DENY')          # no other site may frame the page (clickjacking)
        self.send_header('Referrer-Policy', 'no-referrer')
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict, headers: Sequence[Tuple[str, str]] = ()):
        self._send(status, json.dumps(payload).encode('utf-8'), 'application/json; charset=utf-8', headers)

    def _refuse(self, err: RequestError, discard: bool = False):
        """Answer ``err``; with ``discard`` an unread body is read away first (so the client gets the answer, not
        a broken pipe) and the connection is closed."""
        if discard:
            self._discard_body()
        self._json(err.status, dict(error=str(err)), [('Retry-After', '5')] if err.status == 503 else [])

    def _answer(self, work: Callable[[], dict]):
        try:
            self._json(200, work())
        except _Dropped as err:
            self.close_connection = True
            self.log_error('dropped: %s', err)
            try:
                self._json(408, dict(error=str(err)))
            except OSError:
                pass
        except RequestError as err:
            self._refuse(err)
        except Exception as err:  # noqa: BLE001  the server outlives any one request
            traceback.print_exc(file=sys.stderr)
            self._json(500, dict(error=f'the server failed on this request: {type(err).__name__}: {err}'))

    # ------------------------------------------------------------ checks
    def _check_host(self):
        host = self.headers.get('Host')
        if host is None:
            raise RequestError(403, 'the request has no Host header')
        if host_name(host) not in self.allowed_hosts:
            raise RequestError(403, f'Host {host[:100]!r} is not an address of this server (a page of another '
                                    'site resolved to it?); if it is this server\'s name, start it with '
                                    '--allowed-hosts NAME')

    def _check_origin(self):
        """A POST from another site's page is refused: its Origin (sent by browsers on every POST) must be this
        page's, i.e. equal the Host header."""
        origin = self.headers.get('Origin')
        if origin is not None:
            parts = urlsplit(origin.strip())
            if parts.scheme not in ('http', 'https') or parts.netloc.lower() != self.headers['Host'].strip().lower():
                raise RequestError(403, f'cross-origin request refused: the page at {origin[:100]} is not this '
                                        'server\'s page (POST from the page served here, or without an Origin header)')
        site = self.headers.get('Sec-Fetch-Site')
        if site is not None and site.strip().lower() not in ('same-origin', 'none'):
            raise RequestError(403, f'cross-origin request refused (Sec-Fetch-Site: {site[:40]})')

    def _check_content_type(self):
        """JSON only: a cross-origin page can send text/plain, form or multipart bodies without a CORS preflight,
        never application/json."""
        content_type = (self.headers.get('Content-Type') or '').split(';', 1)[0].strip().lower()
        if content_type != 'application/json':
            raise RequestError(415, f'POST /api/segment takes Content-Type: application/json, got '
                                    f'{content_type or "none"!r}')

    # ------------------------------------------------------------ routes
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._arrived()
        try:
            self._check_host()
        except RequestError as err:
            self._refuse(err)
            return
        path = urlsplit(self.path).path
        if path in ('/', '/index.html'):
            self._send(200, self.service.page().encode('utf-8'), 'text/html; charset=utf-8')
        elif path == '/api/info':
            self._answer(self.service.info)
        elif path == '/api/example':
            self._answer(self.service.example)
        else:
            self._json(404, dict(error=f'no page {path}; the page is at /'))

    def do_POST(self):  # noqa: N802
        try:
            self._check_host()
            self._check_origin()
            path = urlsplit(self.path).path
            if path not in ('/api/segment', '/api/attention'):
                raise RequestError(404, f'no endpoint POST {path}; POST images to /api/segment')
            self._post_path = path
            self._check_content_type()
        except RequestError as err:
            self._refuse(err, discard=True)
            return
        self._answer(self._segment)

    def _segment(self) -> dict:
        length = self.headers.get('Content-Length')
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(411, 'the request needs a Content-Length header')
        length = int(length)
        if length > self.max_upload_bytes:
            self._discard_body()
            raise RequestError(413, f'the request is {length / 2 ** 20:.1f} MB; this server takes at most '
                                    f'{self.max_upload_bytes / 2 ** 20:.1f} MB (--max-upload-mb)')
        if not self.queue.acquire(blocking=False):
            self._discard_body()
            raise RequestError(503, f'the server is busy: it holds {self.max_queued} uploads already '
                                    '(--max-queued); try again in a few seconds')
        try:
            body = self._read_body(length)
            self._arrived()
            work = self.service.attention if getattr(self, '_post_path', None) == '/api/attention' else \
                self.service.segment
            return work(parse_json_body(body))
        finally:
            self.queue.release()

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except (TimeoutError, OSError) as err:
            raise _Dropped(f'the upload stalled: no data for {self.timeout:g} s (--timeout)') from err
        if len(body) < length:
            if self._expired:
                raise _Dropped(f'the request did not arrive within {self.request_timeout:g} s (--request-timeout)')
            raise _Dropped(f'the connection ended after {len(body)} of {length} bytes')
        return body

    def _discard_body(self):
        """Read an unwanted body away (up to 16 x the upload limit, under the timeouts) so the client gets the
        answer, not a broken pipe; a larger one is left unread. The connection is closed afterwards."""
        self.close_connection = True               # an unread rest must not be taken for the next request
        length = self.headers.get('Content-Length', '')
        length = int(length) if length.strip().isdigit() else 0
        if length > 16 * self.max_upload_bytes:
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 2 ** 16))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            return


class WebServer(ThreadingHTTPServer):
    """:class:`ThreadingHTTPServer` with at most ``max_connections`` connections at once (503 beyond) and one-line
    log entries for clients that time out or go away."""
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            body = json.dumps(dict(error=f'the server has {self.max_connections} open connections '
                                         '(--max-connections); try again')).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b'HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n'
                                b'Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s'
                                % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (TimeoutError, ConnectionError)):
            sys.stderr.write(f'[declip-mm serve] {client_address[0]} dropped: {type(err).__name__}: {err}\n')
        else:
            super().handle_error(request, client_address)


def make_server(service: SegmentationService, host: str = '127.0.0.1', port: int = 0,
                max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allowed_hosts: Iterable[str] = (),
                timeout: float = DEFAULT_TIMEOUT, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, max_queued: int = DEFAULT_MAX_QUEUED) -> WebServer:
    """A threading HTTP server for ``service`` bound to (host, port); port 0 picks a free one
    (``server.server_address[1]``). Run it with ``serve_forever()``, stop it with ``shutdown()``. The limits are
    those of the module doc."""
    handler = type('Handler', (_Handler,), dict(
        service=service, max_upload_bytes=int(max_upload_mb * 2 ** 20),
        allowed_hosts=allowed_host_names(host, allowed_hosts), timeout=timeout, request_timeout=request_timeout,
        queue=threading.BoundedSemaphore(max_queued), max_queued=max_queued))
    return WebServer((host, port), handler, max_connections)


def default_example_image() -> Optional[str]:
    """The first sample VOC photo when ``tools/fetch_sample_data.py`` has laid it out, else None."""
    from ..datasets.sample_data import DEFAULT_ROOT, VOC_IDS
    path = DEFAULT_ROOT / 'voc' / 'JPEGImages' / f'{VOC_IDS[0]}.jpg'
    return str(path) if path.is_file() else None


def _pixels(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a pixel count such as 40000000 or 40e6, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be positive, got {text}')
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='declip-mm serve',
        description='A local web page for open-vocabulary segmentation: upload an image, type a vocabulary, see the '
                    'overlay and the area of every class. Needs real weights (--backbone and --text-weights), or '
                    '--random-weights to try the page with random towers (the page then says so). '
                    'See docs/inference.md, "A web page".')
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port (default {DEFAULT_PORT}; 0 = any free)')
    parser.add_argument('--model-name', default=None, help="open_clip model of the weights, e.g. EVA02-B-16 (default: "
                                                           "OpenVocabSegmenter's, the tiny random test preset)")
    parser.add_argument('--backbone', default=None, help='DeCLIP backbone weights file (or an open_clip tag)')
    parser.add_argument('--text-weights', default=None, help="the text tower's ORIGINAL CLIP weights (tag or file)")
    parser.add_argument('--random-weights', action='store_true',
                        help='serve randomly initialised towers where no weights are given (the page, /api/info and '
                             'every answer say so); without it, missing weights are an error')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--precision', default=None, choices=['auto', 'fp32', 'bf16', 'fp16'])
    parser.add_argument('--example-image', default=None, help='the photo /?example=1 segments (default: the first '
                                                              'sample VOC photo, when laid out)')
    parser.add_argument('--example-vocabulary', default=EXAMPLE_VOCABULARY)
    limits = parser.add_argument_group('limits (docs/inference.md)')
    limits.add_argument('--max-upload-mb', type=_positive(float), default=DEFAULT_MAX_UPLOAD_MB,
                        help=f'largest request body in MB (default {DEFAULT_MAX_UPLOAD_MB:g})')
    limits.add_argument('--max-pixels', type=_pixels, default=DEFAULT_MAX_PIXELS,
                        help=f'largest image, width x height, read from its header before decoding (default '
                             f'{DEFAULT_MAX_PIXELS:.0e} = {DEFAULT_MAX_PIXELS // 10 ** 6} MP)')
    limits.add_argument('--allowed-hosts', action='append', default=[], metavar='NAMES',
                        help='comma-separated host names / addresses the server answers besides the bound address, '
                             'localhost, 127.0.0.1 and [::1] (a request with another Host header gets 403); '
                             'repeatable')
    limits.add_argument('--timeout', type=_positive(float), default=DEFAULT_TIMEOUT,
                        help=f'seconds a connection may send nothing before it is dropped (default '
                             f'{DEFAULT_TIMEOUT:g})')
    limits.add_argument('--request-timeout', type=_positive(float), default=DEFAULT_REQUEST_TIMEOUT,
                        help=f'seconds for a whole request to arrive (default {DEFAULT_REQUEST_TIMEOUT:g})')
    limits.add_argument('--max-connections', type=_positive(int), default=DEFAULT_MAX_CONNECTIONS,
                        help=f'open connections at once (default {DEFAULT_MAX_CONNECTIONS}; 503 beyond)')
    limits.add_argument('--max-queued', type=_positive(int), default=DEFAULT_MAX_QUEUED,
                        help=f'uploads held at once, the one being segmented included (default {DEFAULT_MAX_QUEUED}; '
                             '503 beyond)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f'--port must be 0..65535, got {args.port}')
    if args.example_image is not None and not Path(args.example_image).is_file():
        parser.error(f'--example-image {args.example_image}: no such file')
    args.allowed_hosts = [name.strip() for names in args.allowed_hosts for name in names.split(',') if name.strip()]
    return args


def weights_problem(args) -> Optional[str]:
    """None when the weights are given, or random towers were asked for; else what to pass (one line)."""
    missing = [flag for flag, value in (('--backbone', args.backbone), ('--text-weights', args.text_weights))
               if value is None]
    if missing and not args.random_weights:
        return (f"no weights: pass {' and '.join(missing)} (weights are never downloaded), or --random-weights to "
                'serve random towers whose results are noise')
    if not missing and args.random_weights:
        return '--random-weights with --backbone and --text-weights: no tower is random; drop --random-weights'
    return None


WEIGHTS_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')


def missing_weights_file(args) -> Optional[str]:
    """A --backbone / --text-weights that names a file (a weights suffix or a '/') which is not there -> one line
    (an open_clip tag such as merged2b_s8b_b131k, or hf-hub:org/name from the local Hugging Face cache, is resolved,
    and checked, when the model is built). A folder counts when it holds open_clip weights (its Hugging Face layout)."""
    from ..constants import FOLDER_WEIGHTS_FILES
    for flag, value in (('--backbone', args.backbone), ('--text-weights', args.text_weights)):
        if value is None or value.startswith('hf-hub:'):
            continue
        path = Path(value).expanduser()
        if path.is_dir() and any((path / name).is_file() for name in FOLDER_WEIGHTS_FILES):
            continue
        if (path.suffix.lower() in WEIGHTS_SUFFIXES or '/' in value) and not path.is_file():
            where = ' (it is a folder without open_clip weights)' if path.is_dir() else ''
            return f"{flag} {value}: no such file{where}"
    return None


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``declip-mm serve``: build the segmenter once, then serve the page until Ctrl-C. Exit status 2 for a usage or
    set-up error (one ``declip-mm serve: error: ...`` line), 1 when the port cannot be had."""
    args = parse_args(argv)
    problem = weights_problem(args) or missing_weights_file(args)
    if problem:
        print(f'declip-mm serve: error: {problem}', file=sys.stderr)
        return 2
    from . import OpenVocabSegmenter
    options = dict(model_name=args.model_name, backbone=args.backbone, text_weights=args.text_weights,
                   device=args.device, precision=args.precision)
    options = {key: value for key, value in options.items() if value is not None}
    print(f'[declip-mm serve] building the segmenter ({options or "defaults"}) ...', file=sys.stderr)
    try:
        segmenter = OpenVocabSegmenter(**options)
    except (OSError, KeyError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        message = ' '.join(str(err).strip('"').split())
        print(f'declip-mm serve: error: cannot build the segmenter: {message}', file=sys.stderr)
        return 2
    description = ', '.join(f'{k}={v}' for k, v in options.items()) or 'OpenVocabSegmenter defaults'
    if args.random_weights:
        description += ' (RANDOM WEIGHTS)'
    service = SegmentationService(segmenter, description, args.example_image or default_example_image(),
                                  args.example_vocabulary, max_pixels=args.max_pixels,
                                  random_weights=args.random_weights, explorer=lambda: segmenter_explorer(segmenter))
    try:
        server = make_server(service, args.host, args.port, args.max_upload_mb, args.allowed_hosts, args.timeout,
                             args.request_timeout, args.max_connections, args.max_queued)
    except OSError as err:
        print(f'[declip-mm serve] cannot listen on {args.host}:{args.port}: {err}', file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    if args.random_weights:
        print(f'[declip-mm serve] WARNING: {RANDOM_WEIGHTS_WARNING}', file=sys.stderr)
    if not is_loopback(args.host):
        print(f'[declip-mm serve] WARNING: listening on {args.host}, so other machines can use this server; '
              'it has no authentication. It answers the Host names '
              f'{", ".join(sorted(server.RequestHandlerClass.allowed_hosts))} (--allowed-hosts adds more)',
              file=sys.stderr)
    print(f'[declip-mm serve] open http://{"127.0.0.1" if host == "0.0.0.0" else host}:{port}/ '
          '(Ctrl-C stops)', file=sys.stderr, flush=True)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop the server, also where the process started with SIGINT ignored (background jobs
        # of a non-interactive shell inherit SIG_IGN, and Python then never raises KeyboardInterrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
