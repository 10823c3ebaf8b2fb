"""A local web page for open-vocabulary segmentation: upload an image, type a vocabulary, see the overlay and the
area of every class. Standard library only (``http.server``), the page is plain HTML + JS (:mod:`.web_page`).

    declip-mm serve [--host 127.0.0.1] [--port 8000] [--model-name NAME] [--backbone FILE] [--text-weights W]
                    [--device cpu|cuda] [--precision auto|fp32|bf16|fp16] [--example-image FILE]
    python -m declip_mm.apis.web_app ...            (the same)

then open http://127.0.0.1:8000/ (``/?example=1`` segments the example photo at once).

HTTP interface (JSON in, JSON out):

* ``GET /`` the page; ``GET /api/info`` ``{"model": ...}``;
* ``GET /api/example`` ``{"image": data URL, "vocabulary": str, "background": str or null}`` (the example photo:
  ``--example-image``, else the first sample VOC photo of ``tools/fetch_sample_data.py`` when it is laid out);
* ``POST /api/segment`` with ``{"image": data URL or plain base64 of an image file, "vocabulary": "cat, dog,
  sofa; couch", "background": "NAME" or null}``: 200 ``{"class_names", "background", "areas": [[name, fraction],
  ...], "overlay": PNG data URL, "width", "height", "seconds"}``.

Classes are separated by commas or new lines, synonyms of a class by ';' (the vocabulary is never read as a file
name here: the server must not open files a browser names). A bad request (no image, an unreadable image, an empty
or duplicated vocabulary, a bad background name, a body over ``--max-upload-mb``) answers 4xx ``{"error": message}``
and the page shows the message; an unexpected failure answers 500 with the exception's message; the server keeps
serving either way. One request is segmented at a time (the model is shared).
"""
import argparse
import base64
import binascii
import io
import ipaddress
import json
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

from .web_page import PAGE_HTML

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 32.0
EXAMPLE_VOCABULARY = 'person; people, bottle, food; dish, table, wall, floor'   # fits the first VOC photo
EXAMPLE_BACKGROUND = None


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status, the message says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def split_vocabulary(text) -> list:
    """Form text -> class strings: comma- or newline-separated (synonyms keep their ';'); separators at either end
    are dropped, empty classes in between are kept (the vocabulary check names them)."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise RequestError(400, f'"vocabulary" must be a string of class names, got {type(text).__name__}')
    text = text.replace('\n', ',').strip(', \t\r')
    return [item.strip() for item in text.split(',')] if text else []


def decode_image(data) -> 'np.ndarray':  # noqa: F821
    """A data URL or plain base64 of an image file -> (H, W, 3) RGB uint8 (EXIF-rotated, any PIL mode;
    :func:`declip_mm.apis.inputs.pil_to_rgb`). Raises :class:`RequestError` (400) naming the problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .inputs import InputError, pil_to_rgb
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
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return pil_to_rgb(ImageOps.exif_transpose(img), 'the uploaded image')
    except UnidentifiedImageError as err:
        raise RequestError(400, f'the uploaded file ({len(raw)} bytes) is not an image PIL can read '
                                '(corrupt or unknown format)') from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, InputError) as err:
        raise RequestError(400, f'cannot decode the uploaded image ({err})') from err


def png_data_url(image) -> str:
    """A PIL image -> 'data:image/png;base64,...'."""
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


class SegmentationService:
    """The server's work, without HTTP: request dicts -> response dicts (tested directly and through HTTP).

    Args:
        segmenter: ``segmenter(image (H, W, 3) uint8, classes, background=NAME or None)`` -> a result with
            ``class_names``, ``background``, ``areas()`` ({name: fraction}) and ``overlay()`` (PIL image), i.e.
            :class:`declip_mm.apis.OpenVocabSegmenter`.
        description: what ``/api/info`` reports as the model.
        example_image: the example photo's file (None: no example).
    """

    def __init__(self, segmenter: Callable, description: str = '', example_image: Optional[str] = None,
                 example_vocabulary: str = EXAMPLE_VOCABULARY, example_background: Optional[str] = EXAMPLE_BACKGROUND):
        self.segmenter = segmenter
        self.description = description
        self.example_image = example_image
        self.example_vocabulary, self.example_background = example_vocabulary, example_background
        self._lock = threading.Lock()

    def info(self) -> dict:
        return dict(model=self.description)

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
        """``{"image", "vocabulary", "background"}`` -> the overlay and areas (module doc)."""
        from .inputs import InputError
        from .vocabulary import VocabularyError
        if not isinstance(request, dict):
            raise RequestError(400, 'the request body must be a JSON object {"image": ..., "vocabulary": ...}')
        unknown = sorted(set(request) - {'image', 'vocabulary', 'background'})
        if unknown:
            raise RequestError(400, f'unknown request keys {unknown}; expected image, vocabulary, background')
        image = decode_image(request.get('image'))
        classes = split_vocabulary(request.get('vocabulary'))
        if not classes:
            raise RequestError(400, 'the vocabulary is empty: type class names separated by commas, e.g. "cat, dog"')
        background = request.get('background')
        if background is not None and not isinstance(background, str):
            raise RequestError(400, f'"background" must be a class name or null, got {type(background).__name__}')
        if background is not None:
            background = background.strip() or None         # an empty field means no background class
        start = time.perf_counter()
        try:
            with self._lock:
                result = self.segmenter(image, classes, background=background)
                areas = result.areas()
                overlay = result.overlay()
        except (VocabularyError, InputError) as err:        # the segmenter's own checks of the request
            raise RequestError(400, str(err)) from err
        return dict(class_names=list(result.class_names), background=result.background,
                    areas=[[name, float(fraction)] for name, fraction in areas.items()],
                    overlay=png_data_url(overlay), width=int(image.shape[1]), height=int(image.shape[0]),
                    seconds=time.perf_counter() - start)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET / (the page), GET /api/info, GET /api/example, POST /api/segment to :class:`SegmentationService`."""
    service: SegmentationService = None
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2 ** 20)
    server_version = 'declip-mm-web'

    def log_message(self, fmt, *args):                  # one short line per request on stderr
        sys.stderr.write(f'[declip-mm serve] {self.address_string()} {fmt % args}\n')

    def _send(self, status: int, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict):
        self._send(status, json.dumps(payload).encode('utf-8'), 'application/json; charset=utf-8')

    def _answer(self, work: Callable[[], dict]):
        try:
            self._json(200, work())
        except RequestError as err:
            self._json(err.status, dict(error=str(err)))
        except Exception as err:  # noqa: BLE001  the server outlives any one request
            traceback.print_exc(file=sys.stderr)
            self._json(500, dict(error=f'the server failed on this request: {type(err).__name__}: {err}'))

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path in ('/', '/index.html'):
            self._send(200, PAGE_HTML.encode('utf-8'), 'text/html; charset=utf-8')
        elif path == '/api/info':
            self._answer(self.service.info)
        elif path == '/api/example':
            self._answer(self.service.example)
        else:
            self._json(404, dict(error=f'no page {path}; the page is at /'))

    def do_POST(self):  # noqa: N802
        path = urlsplit(self.path).path
        if path != '/api/segment':
            self._json(404, dict(error=f'no endpoint POST {path}; POST images to /api/segment'))
            return
        self._answer(self._segment)

    def _segment(self) -> dict:
        length = self.headers.get('Content-Length')
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(411, 'the request needs a Content-Length header')
        if int(length) > self.max_upload_bytes:
            self._discard_body(int(length))
            raise RequestError(413, f'the request is {int(length) / 2 ** 20:.1f} MB; this server takes at most '
                                    f'{self.max_upload_bytes / 2 ** 20:.1f} MB (--max-upload-mb)')
        body = self.rfile.read(int(length))
        try:
            request = json.loads(body.decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f'the request body is not JSON ({err})') from err
        return self.service.segment(request)

    def _discard_body(self, length: int):
        """Read an oversized body away (up to 16 x the limit) so the client gets the 413, not a broken pipe; a
        larger one is left unread and the connection closed."""
        self.close_connection = True               # an unread rest must not be taken for the next request
        if length > 16 * self.max_upload_bytes:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 2 ** 16))
            if not chunk:
                return
            length -= len(chunk)


def make_server(service: SegmentationService, host: str = '127.0.0.1', port: int = 0,
                max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> ThreadingHTTPServer:
    """A threading HTTP server for ``service`` bound to (host, port); port 0 picks a free one
    (``server.server_address[1]``). Run it with ``serve_forever()``, stop it with ``shutdown()``."""
    handler = type('Handler', (_Handler,), dict(service=service, max_upload_bytes=int(max_upload_mb * 2 ** 20)))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def default_example_image() -> Optional[str]:
    """The first sample VOC photo when ``tools/fetch_sample_data.py`` has laid it out, else None."""
    from ..datasets.sample_data import DEFAULT_ROOT, VOC_IDS
    path = DEFAULT_ROOT / 'voc' / 'JPEGImages' / f'{VOC_IDS[0]}.jpg'
    return str(path) if path.is_file() else None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='declip-mm serve', description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port (default {DEFAULT_PORT}; 0 = any free)')
    parser.add_argument('--model-name', default=None, help="open_clip model of the backbone (OpenVocabSegmenter's "
                                                           'default when omitted)')
    parser.add_argument('--backbone', default=None, help='DeCLIP backbone weights file')
    parser.add_argument('--text-weights', default=None, help="the text tower's open_clip weights (tag or file)")
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--precision', default=None, choices=['auto', 'fp32', 'bf16', 'fp16'])
    parser.add_argument('--example-image', default=None, help='the photo /?example=1 segments (default: the first '
                                                              'sample VOC photo, when laid out)')
    parser.add_argument('--example-vocabulary', default=EXAMPLE_VOCABULARY)
    parser.add_argument('--max-upload-mb', type=float, default=DEFAULT_MAX_UPLOAD_MB)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f'--port must be 0..65535, got {args.port}')
    if args.max_upload_mb <= 0:
        parser.error(f'--max-upload-mb must be positive, got {args.max_upload_mb}')
    if args.example_image is not None and not Path(args.example_image).is_file():
        parser.error(f'--example-image {args.example_image}: no such file')
    return args


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``declip-mm serve``: build the segmenter once, then serve the page until Ctrl-C."""
    args = parse_args(argv)
    from . import OpenVocabSegmenter
    options = dict(model_name=args.model_name, backbone=args.backbone, text_weights=args.text_weights,
                   device=args.device, precision=args.precision)
    options = {key: value for key, value in options.items() if value is not None}
    print(f'[declip-mm serve] building the segmenter ({options or "defaults"}) ...', file=sys.stderr)
    segmenter = OpenVocabSegmenter(**options)
    description = ', '.join(f'{k}={v}' for k, v in options.items()) or 'OpenVocabSegmenter defaults'
    service = SegmentationService(segmenter, description, args.example_image or default_example_image(),
                                  args.example_vocabulary)
    try:
        server = make_server(service, args.host, args.port, args.max_upload_mb)
    except OSError as err:
        print(f'[declip-mm serve] cannot listen on {args.host}:{args.port}: {err}', file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    if not is_loopback(args.host):
        print(f'[declip-mm serve] WARNING: listening on {args.host}, so other machines can use this server; '
              'it has no authentication', file=sys.stderr)
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
