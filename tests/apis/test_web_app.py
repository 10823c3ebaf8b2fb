"""The local web page (declip_mm/apis/web_app.py). The JSON endpoint over plain HTTP (urllib, the
good request against the segmenter called directly, every bad request a JSON error and the server still up), and
the page itself in headless Chromium: ``/?example=1`` segments the example photo; the screenshot must show the
page and, at the overlay's on-screen box, the overlay's pixels; the DOM must hold the area table of the
vocabulary. Loopback traffic only (the server binds 127.0.0.1; Chromium's other traffic goes to a dead proxy).

Attacks and limits: each attack over HTTP against a server on 127.0.0.1, bounded in count and time: a
decompression-bomb PNG (413 from its header, the decoder never called; in the real server process the peak memory
does not move), concurrent uploads (decoded one at a time), a foreign Host (403), cross-origin and text/plain POSTs
(403 / 415, never segmented), stalled and trickling uploads (dropped within the timeouts while others are served),
deeply nested JSON (400), too many connections or queued uploads (503); random weights must be asked for and are
announced on the page and in every answer; ``serve --help`` and a missing weights file."""
import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.apis import web_app
from declip_mm.apis.web_app import (BAND_HEIGHT, RANDOM_WEIGHTS_WARNING, SegmentationService, main, make_server,
                                    split_vocabulary)

VOCABULARY = 'person; people, bicycle, car, sky; clouds, tree'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def segmenter():
    from declip_mm.apis import OpenVocabSegmenter
    torch.manual_seed(0)
    return OpenVocabSegmenter(model_name='DeCLIP-Tiny-ViT-16', backbone=None, text_weights=None, device='cpu',
                              precision='fp32')


@pytest.fixture(scope='module')
def photo(sample_root):
    return sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[0]


def serve(service, **kwargs):
    server = make_server(service, '127.0.0.1', 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f'http://127.0.0.1:{server.server_address[1]}'


@pytest.fixture
def served():
    """serve(service, **limits) -> (server, url); every server is stopped after the test."""
    servers = []

    def start(service, **kwargs):
        server, address = serve(service, **kwargs)
        servers.append(server)
        return server, address
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def url(segmenter, photo):
    """The tiny random model, served as random weights (banner on)."""
    server, address = serve(SegmentationService(segmenter, 'DeCLIP-Tiny-ViT-16 (random)', str(photo), VOCABULARY,
                                                random_weights=True), max_upload_mb=1.0)
    yield address
    server.shutdown()
    server.server_close()


def post(url, payload, raw: bytes = None, headers: dict = None, path: str = '/api/segment'):
    """(status, JSON answer) of POST /api/segment (JSON, no Origin, as a script would send it; ``headers`` add to or
    replace those)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url + path, data=body,
                                     headers={'Content-Type': 'application/json', **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url, path, headers: dict = None):
    """(status, body bytes) of GET ``path``."""
    request = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def data_url(path_or_bytes, mime='image/jpeg'):
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return f'data:{mime};base64,' + base64.b64encode(raw).decode()


def decode_png(url_text):
    assert url_text.startswith('data:image/png;base64,')
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url_text.split(',', 1)[1]))).convert('RGB'))


def strip_band(overlay):
    """A random-weights overlay -> the segmenter's overlay under the red band (which must be there)."""
    band = overlay[:BAND_HEIGHT].reshape(-1, 3).astype(int)
    assert (np.abs(band - (200, 0, 0)).sum(-1) == 0).mean() > 0.8 and (band.min(-1) > 180).any(), 'no red band'
    return overlay[BAND_HEIGHT:]


def expected(segmenter, image_path, classes, background=None):
    from declip_mm.apis.inputs import load_image
    result = segmenter(load_image(image_path), classes, background=background)
    return result, np.asarray(result.overlay().convert('RGB'))


# ------------------------------------------------------------------ the JSON endpoint
def test_the_page_and_the_info_are_served(url):
    with urllib.request.urlopen(url + '/', timeout=30) as answer:
        page = answer.read().decode()
        assert answer.headers['Content-Type'].startswith('text/html')
    for element in ('id="image"', 'id="vocabulary"', 'id="background"', 'id="overlay"', 'id="areas"', 'id="error"'):
        assert element in page
    with urllib.request.urlopen(url + '/api/info', timeout=30) as answer:
        assert json.loads(answer.read()) == dict(model='DeCLIP-Tiny-ViT-16 (random)', max_pixels=40_000_000,
                                                 random_weights=True, warning=RANDOM_WEIGHTS_WARNING)
    # random weights: the banner is in the served HTML itself (visible without script)
    banner = re.search(r'<p id="random-weights"[^>]*>([^<]*)</p>', page)
    assert banner and 'hidden' not in banner.group(0) and banner.group(1) == RANDOM_WEIGHTS_WARNING


def test_segment_request_returns_the_segmenters_overlay_and_areas(url, segmenter, photo):
    status, answer = post(url, dict(image=data_url(photo), vocabulary=VOCABULARY, background=None))
    assert status == 200, answer
    assert answer['random_weights'] is True and answer['warning'] == RANDOM_WEIGHTS_WARNING
    result, overlay = expected(segmenter, photo, split_vocabulary(VOCABULARY))
    assert answer['class_names'] == list(result.class_names) == ['person', 'bicycle', 'car', 'sky', 'tree']
    assert answer['background'] is None
    assert answer['areas'] == [[k, v] for k, v in result.areas().items()]
    assert sum(v for _, v in answer['areas']) == pytest.approx(1.0)
    assert np.array_equal(strip_band(decode_png(answer['overlay'])), overlay)
    w, h = Image.open(photo).size
    assert (answer['width'], answer['height']) == (w, h)
    # plain base64 (no data URL) and a named background, which is not in the vocabulary: a new last class
    status, answer = post(url, dict(image=base64.b64encode(photo.read_bytes()).decode(), vocabulary='car, tree',
                                    background='background'))
    assert status == 200, answer
    assert answer['class_names'] == ['car', 'tree', 'background'] and answer['background'] == 'background'
    result, overlay = expected(segmenter, photo, ['car', 'tree'], background='background')
    assert answer['areas'] == [[k, v] for k, v in result.areas().items()]
    assert np.array_equal(strip_band(decode_png(answer['overlay'])), overlay)


def test_one_word_grayscale_and_rgba_uploads(url, photo):
    img = Image.open(photo)
    for mode, fmt in (('L', 'PNG'), ('RGBA', 'PNG'), ('I;16', 'PNG')):
        buffer = io.BytesIO()
        (img.convert(mode) if mode != 'I;16' else Image.fromarray(np.asarray(img.convert('L'), np.uint16) * 257)
         ).save(buffer, format=fmt)
        status, answer = post(url, dict(image=data_url(buffer.getvalue(), 'image/png'), vocabulary='cat'))
        assert status == 200, (mode, answer)
        assert answer['class_names'] == ['cat'] and answer['areas'] == [['cat', 1.0]]
        assert decode_png(answer['overlay']).shape[1] == img.size[0]


def test_a_vocabulary_naming_a_file_is_not_read(url, photo, tmp_path):
    secret = tmp_path / 'classes.txt'
    secret.write_text('private\nlines\n')
    status, answer = post(url, dict(image=data_url(photo), vocabulary=str(secret)))
    assert status == 200, answer
    assert answer['class_names'] == [str(secret)]


@pytest.mark.parametrize('payload, status, message', [
    (dict(vocabulary='cat'), 400, 'no image in the request'),
    (dict(image='', vocabulary='cat'), 400, 'no image in the request'),
    (dict(image='data:image/png;base64,%%%notbase64', vocabulary='cat'), 400, 'not valid base64'),
    (dict(image=data_url(b'this is not an image at all'), vocabulary='cat'), 400, 'not an image PIL can read'),
    (dict(image='JPEG', vocabulary=''), 400, None),                         # 'JPEG' is set to a truncated JPEG below
    (dict(image='PHOTO', vocabulary=''), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO', vocabulary=' , ,\n'), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO'), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO', vocabulary='cat, dog, Cat'), 400, "'Cat' is given twice"),
    (dict(image='PHOTO', vocabulary='cat, sofa; couch, couch'), 400, "'couch' is given twice"),
    (dict(image='PHOTO', vocabulary='cat,,dog'), 400, 'empty name'),
    (dict(image='PHOTO', vocabulary='cat', background='a, b'), 400, 'background must be one class name'),
    (dict(image='PHOTO', vocabulary=['cat']), 400, '"vocabulary" must be a string'),
    (dict(image='PHOTO', vocabulary='cat', colour='red'), 400, "unknown request keys ['colour']"),
])
def test_bad_requests_answer_a_json_error(url, photo, payload, status, message):
    jpeg = photo.read_bytes()
    payload = {k: (data_url(photo) if v == 'PHOTO' else data_url(jpeg[:len(jpeg) // 3]) if v == 'JPEG' else v)
               for k, v in payload.items()}
    if message is None:                                                     # the truncated JPEG
        message = 'cannot decode the uploaded image'
        payload['vocabulary'] = 'cat'
    got_status, answer = post(url, payload)
    assert got_status == status and message in answer['error'], answer
    assert post(url, dict(image=data_url(photo), vocabulary='cat'))[0] == 200     # still serving


def test_malformed_http_requests(url, photo):
    status, answer = post(url, None, raw=b'{"image": ')
    assert status == 400 and 'not JSON' in answer['error']
    status, answer = post(url, None, raw=b'[1, 2]')
    assert status == 400 and 'JSON object' in answer['error']
    big = json.dumps(dict(image='A' * (1_100_000), vocabulary='cat')).encode()
    status, answer = post(url, None, raw=big)
    assert status == 413 and 'at most 1.0 MB' in answer['error']
    for path, method in (('/nothing', 'GET'), ('/api/other', 'POST')):
        request = urllib.request.Request(url + path, data=b'{}' if method == 'POST' else None, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 404 and 'error' in json.loads(err.value.read())
    assert post(url, dict(image=data_url(photo), vocabulary='cat'))[0] == 200


def test_a_failing_segmenter_answers_500_and_the_server_survives(photo, served):
    calls = []

    def failing(image, classes, background=None):
        calls.append(classes)
        raise RuntimeError('out of memory on the device')
    server, address = served(SegmentationService(failing, 'failing'))
    for _ in range(2):
        status, answer = post(address, dict(image=data_url(photo), vocabulary='cat'))
        assert status == 500 and 'RuntimeError: out of memory on the device' in answer['error']
    with pytest.raises(urllib.error.HTTPError) as err:                 # no example photo on this server
        urllib.request.urlopen(address + '/api/example', timeout=30)
    assert err.value.code == 404 and '--example-image' in json.loads(err.value.read())['error']
    assert calls == [['cat'], ['cat']]


def test_command_line_checks(tmp_path, capsys):
    for argv, message in ((['--port', '70000'], '--port must be 0..65535'),
                          (['--example-image', str(tmp_path / 'none.jpg')], 'no such file'),
                          (['--precision', 'fp8'], "invalid choice: 'fp8'"),
                          (['--max-pixels', '0'], 'must be positive'),
                          (['--max-pixels', 'lots'], 'expected a pixel count'),
                          (['--timeout', '-1'], 'must be positive')):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------ attacks, limits, random weights
class FakeResult:
    class_names, background = ['cat'], None

    def areas(self):
        return {'cat': 1.0}

    def overlay(self):
        return Image.new('RGB', (8, 8), (0, 128, 0))


class CountingSegmenter:
    """Records each call; optionally waits ``delay`` seconds (a slow model)."""

    def __init__(self, delay: float = 0.0):
        self.calls, self.delay, self.running = [], delay, 0
        self.guard = threading.Lock()

    def __call__(self, image, classes, background=None):
        with self.guard:
            self.running += 1
        try:
            self.calls.append(classes)
            time.sleep(self.delay)
            return FakeResult()
        finally:
            with self.guard:
                self.running -= 1


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new('RGB', (24, 16), (200, 30, 30)).save(buffer, format='PNG')
    return data_url(buffer.getvalue(), 'image/png')


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, written row by row through zlib: 12000 x 12000 is a
    18 KB file that decodes to 144 M pixels (PIL: 144 MB; as float RGB, GBs)."""
    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
    row = b'\x00' * (1 + (width + 7) // 8)                  # filter byte 0 + the packed bits
    packer = zlib.compressobj(9)
    idat = b''.join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0))
            + chunk(b'IDAT', idat) + chunk(b'IEND', b''))


def test_the_bomb_png_is_what_it_claims():
    bomb = bomb_png(12000, 12000)
    assert len(bomb) < 64_000
    with Image.open(io.BytesIO(bomb)) as img:
        assert img.size == (12000, 12000) and img.mode == '1'
    small = bomb_png(40, 30)                                   # the same writer at a decodable size
    with Image.open(io.BytesIO(small)) as img:
        img.load()
        assert img.size == (40, 30) and not np.asarray(img).any()


def test_a_decompression_bomb_is_refused_from_its_header(served, monkeypatch):
    """The issue's attack: a small PNG whose header says 12000 x 12000 (144 MP). 413 naming the size and the limit,
    and PIL's decoder is never called (the old server decoded it: 1.1 -> 6.5 GB)."""
    from PIL import ImageFile
    decoded = []
    original_load = ImageFile.ImageFile.load

    def load(img):
        decoded.append(img.size)
        if img.size[0] * img.size[1] > 10 ** 6:                 # never decode a big one here, whatever the server
            raise OSError(f'the decoder was called on a {img.size} image')
        return original_load(img)
    monkeypatch.setattr(ImageFile.ImageFile, 'load', load)
    fake = CountingSegmenter()
    _, address = served(SegmentationService(fake, 'fake'), max_upload_mb=1.0)
    for width, height, size in ((12000, 12000, '12000 x 12000 = 144.0 MP'),
                                (8000, 5001, '8000 x 5001 = 40.0 MP'),     # one row over the 40 MP default
                                (30000, 30000, '900.0 MP')):              # past PIL's own ceiling too
        status, answer = post(address, dict(image=data_url(bomb_png(width, height), 'image/png'), vocabulary='cat'))
        assert status == 413, answer
        assert size in answer['error'] and 'at most 40.0 MP' in answer['error'] and '--max-pixels' in answer['error']
    assert decoded == [] and fake.calls == []
    # exactly 40 MP passes the limit: it goes to the decoder (which the patch above refuses: a 400)
    status, answer = post(address, dict(image=data_url(bomb_png(8000, 5000), 'image/png'), vocabulary='cat'))
    assert status == 400 and 'decoder was called' in answer['error'], answer
    assert decoded == [(8000, 5000)]
    # a smaller limit, and an image under it still works
    _, small_limit = served(SegmentationService(fake, 'fake', max_pixels=300), max_upload_mb=1.0)
    status, answer = post(small_limit, dict(image=small_png(), vocabulary='cat'))
    assert status == 413 and '24 x 16 = 0.0 MP' in answer['error'] and '(300 pixels' in answer['error']
    status, answer = post(address, dict(image=small_png(), vocabulary='cat'))
    assert status == 200 and answer['random_weights'] is False and 'warning' not in answer


def test_concurrent_uploads_are_decoded_one_at_a_time(served, monkeypatch):
    """Decoding happens inside the one-at-a-time work: three uploads at once never decode two images at once, nor
    decode one while another is segmented."""
    fake = CountingSegmenter(delay=0.3)
    state = dict(decoding=0, most=0, during_segmentation=0)
    guard = threading.Lock()
    original = web_app.decode_image

    def decode(*args, **kwargs):
        with guard:
            state['decoding'] += 1
            state['most'] = max(state['most'], state['decoding'])
            state['during_segmentation'] += fake.running
        time.sleep(0.3)
        try:
            return original(*args, **kwargs)
        finally:
            with guard:
                state['decoding'] -= 1
    monkeypatch.setattr(web_app, 'decode_image', decode)
    _, address = served(SegmentationService(fake, 'fake'))
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post(address, dict(image=small_png(), vocabulary='cat'))))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in answers] == [200] * 3, answers
    assert state['most'] == 1 and state['during_segmentation'] == 0, state


def test_uploads_beyond_the_queue_are_refused(served):
    release = threading.Event()

    def blocked(image, classes, background=None):
        release.wait(30)
        return FakeResult()
    _, address = served(SegmentationService(blocked, 'fake'), max_queued=1)
    first = []
    thread = threading.Thread(target=lambda: first.append(post(address, dict(image=small_png(), vocabulary='cat'))))
    thread.start()
    time.sleep(0.5)                                            # the first upload is being segmented
    try:
        status, answer = post(address, dict(image=small_png(), vocabulary='cat'))
        assert status == 503 and '--max-queued' in answer['error']
    finally:
        release.set()
        thread.join(30)
    assert first[0][0] == 200
    assert post(address, dict(image=small_png(), vocabulary='cat'))[0] == 200


def test_a_foreign_host_header_is_refused(served):
    """DNS rebinding: a page on attacker.example whose name now points at 127.0.0.1 sends Host: attacker.example."""
    fake = CountingSegmenter()
    server, address = served(SegmentationService(fake, 'fake'), allowed_hosts=['gpu-box.lan'])
    port = server.server_address[1]
    for host in ('attacker.example', f'attacker.example:{port}', f'127.0.0.1.attacker.example:{port}', '0.0.0.0'):
        for path in ('/', '/api/info', '/api/example'):
            status, body = get(address, path, headers={'Host': host})
            assert status == 403 and 'is not an address of this server' in json.loads(body)['error'], (host, path)
        status, answer = post(address, dict(image=small_png(), vocabulary='cat'), headers={'Host': host})
        assert status == 403 and '--allowed-hosts' in answer['error']
    assert fake.calls == []
    for host in (f'127.0.0.1:{port}', f'localhost:{port}', f'LocalHost:{port}', f'[::1]:{port}', 'localhost',
                 f'gpu-box.lan:{port}'):
        status, body = get(address, '/api/info', headers={'Host': host})
        assert status == 200, (host, body)
        assert post(address, dict(image=small_png(), vocabulary='cat'), headers={'Host': host})[0] == 200


def test_cross_origin_posts_are_refused(served):
    """Any website could drive the old server from its visitors' browsers: a cross-origin text/plain POST (a "simple"
    request, sent without preflight) was segmented. Now: 403 (foreign Origin), 415 (not JSON), never segmented."""
    fake = CountingSegmenter()
    server, address = served(SegmentationService(fake, 'fake'))
    port = server.server_address[1]
    body = json.dumps(dict(image=small_png(), vocabulary='cat')).encode()
    for headers in ({'Origin': 'http://attacker.example', 'Content-Type': 'text/plain;charset=UTF-8'},
                    {'Origin': 'http://attacker.example'},
                    {'Origin': f'http://attacker.example:{port}'},
                    {'Origin': f'http://localhost:{port}'},                # another origin than the page's
                    {'Origin': f'http://127.0.0.1:{port + 1}'},
                    {'Origin': 'null'},                                      # sandboxed frames, file:// pages
                    {'Origin': f'http://127.0.0.1:{port}', 'Sec-Fetch-Site': 'cross-site'},
                    {'Sec-Fetch-Site': 'same-site'}):
        status, answer = post(address, None, raw=body, headers=headers)
        assert status == 403 and 'cross-origin request refused' in answer['error'], (headers, answer)
    for content_type in ('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', ''):
        status, answer = post(address, None, raw=body, headers={'Content-Type': content_type})
        assert status == 415 and 'application/json' in answer['error'], (content_type, answer)
    assert fake.calls == []
    # the page's own POST (same origin, as a browser sends it) and a script's POST (no Origin) are served
    for headers in ({'Origin': f'http://127.0.0.1:{port}', 'Sec-Fetch-Site': 'same-origin'}, {},
                    {'Content-Type': 'application/json; charset=utf-8'}):
        assert post(address, None, raw=body, headers=headers)[0] == 200
    assert len(fake.calls) == 3


def read_until_closed(sock, limit_s: float) -> Tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (s); fails after limit_s."""
    start, data = time.monotonic(), b''
    sock.settimeout(limit_s)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, time.monotonic() - start
            data += chunk
    except socket.timeout:
        pytest.fail(f'the server held the connection for over {limit_s} s (got {data[:100]!r})')
    except ConnectionResetError:
        return data, time.monotonic() - start


def test_stalled_uploads_are_dropped_and_others_are_served(served):
    """Headers with a Content-Length and then nothing: dropped after --timeout (408), a request that trickles in
    byte by byte after --request-timeout; a request line that stops mid-headers too. Meanwhile others are served."""
    fake = CountingSegmenter()
    server, address = served(SegmentationService(fake, 'fake'), timeout=1.5, request_timeout=4.0)
    port = server.server_address[1]
    headers = (f'POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n'
               'Content-Length: 100000\r\n\r\n').encode()
    stalled = [socket.create_connection(('127.0.0.1', port), timeout=10) for _ in range(3)]
    stalled[0].sendall(headers)                                             # the body never comes
    stalled[1].sendall(headers + b'{"image": "')                            # the body stops early
    stalled[2].sendall(b'POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n')   # the headers stop
    assert post(address, dict(image=small_png(), vocabulary='cat'))[0] == 200   # others are served meanwhile
    for index, sock in enumerate(stalled):
        with sock:
            data, seconds = read_until_closed(sock, 10.0)
        assert seconds < 1.5 + 3.0
        if index < 2:                                                        # the uploads are told why
            assert data.startswith(b'HTTP/1.0 408') and b'--timeout' in data, data[:300]
    with socket.create_connection(('127.0.0.1', port), timeout=10) as trickle:
        trickle.sendall(headers)
        start, answer = time.monotonic(), None
        for _ in range(40):                                                  # one byte each 0.25 s: never idle
            try:
                trickle.sendall(b' ')
                trickle.settimeout(0.25)
                answer = trickle.recv(65536)                                 # the 408, or b'' once closed
                break
            except socket.timeout:
                continue
            except OSError:                                                  # closed under our feet
                answer = b''
                break
        assert answer is not None and time.monotonic() - start < 4.0 + 3.0, \
            'a trickling upload was held past --request-timeout'
        if answer:
            answer += read_until_closed(trickle, 5.0)[0]
        assert answer == b'' or (answer.startswith(b'HTTP/1.0 408') and b'--request-timeout' in answer), answer
    assert post(address, dict(image=small_png(), vocabulary='cat'))[0] == 200
    assert len(fake.calls) == 2


def test_a_stalled_upload_gets_a_408(served):
    server, address = served(SegmentationService(CountingSegmenter(), 'fake'), timeout=1.0, request_timeout=10.0)
    with socket.create_connection(('127.0.0.1', server.server_address[1]), timeout=10) as sock:
        sock.sendall(b'POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                     b'Content-Length: 50\r\n\r\n{"image"')
        data, seconds = read_until_closed(sock, 10.0)
    assert data.startswith(b'HTTP/1.0 408') and b'--timeout' in data and seconds < 4.0


def test_too_many_connections_are_refused(served):
    server, address = served(SegmentationService(CountingSegmenter(), 'fake'), max_connections=2, timeout=5.0)
    idle = [socket.create_connection(('127.0.0.1', server.server_address[1]), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.3)
        status, body = get(address, '/api/info')
        assert status == 503 and '--max-connections' in json.loads(body)['error']
    finally:
        for sock in idle:
            sock.close()
    for _ in range(50):                                                      # the server notices the closed ones
        if get(address, '/api/info')[0] == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail('the server did not take connections again')


@pytest.mark.parametrize('body, message', [
    (b'[' * 10000 + b']' * 10000, 'more than 1000'),                               # the RecursionError
    (b'{"image": ' + b'{"a": ' * 5000 + b'1' + b'}' * 5001, 'more than 1000'),
    (b'{"image": ' + b'[' * 100 + b']' * 100 + b', "vocabulary": "cat"}', 'nested 101 levels deep'),
    (b'{"image": [' + b'[],' * 2000 + b'[]]}', 'more than 1000'),                # many small containers
    (b'{"image": "\xff\xfe"}', 'not JSON'),
])
def test_deep_or_bulky_json_answers_400(served, body, message):
    fake = CountingSegmenter()
    _, address = served(SegmentationService(fake, 'fake'))
    status, answer = post(address, None, raw=body)
    assert status == 400 and message in answer['error'], answer
    assert fake.calls == [] and post(address, dict(image=small_png(), vocabulary='cat'))[0] == 200


def test_random_weights_must_be_asked_for(capsys):
    """``serve`` alone (the tiny preset) and a real model without weights are refused: exit 2, one line saying what
    to pass; asking for random weights while giving both weights is a contradiction."""
    for argv in ([], ['--model-name', 'EVA02-B-16'], ['--model-name', 'EVA02-B-16', '--backbone', 'b.pth'],
                 ['--random-weights', '--backbone', 'b.pth', '--text-weights', 'merged2b_s8b_b131k']):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and err.startswith('declip-mm serve: error: '), err
        assert '--random-weights' in err
    assert main(['--model-name', 'EVA02-B-16', '--backbone', 'b.pth']) == 2
    assert 'pass --text-weights' in capsys.readouterr().err


def test_a_missing_weights_file_is_one_line(tmp_path, capsys):
    """``serve --backbone missing.pth``: one line, exit 2, before any model is built (was a traceback)."""
    missing = str(tmp_path / 'missing.pth')
    for argv, flag in ((['--backbone', missing, '--random-weights'], '--backbone'),
                       (['--backbone', missing, '--text-weights', 'merged2b_s8b_b131k'], '--backbone'),
                       (['--backbone', missing, '--text-weights', str(tmp_path)], '--backbone'),
                       (['--model-name', 'EVA02-B-16', '--random-weights',
                         '--text-weights', str(tmp_path / 'no/t.bin')], '--text-weights')):
        assert main(argv + ['--port', '0']) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and err.startswith(f'declip-mm serve: error: {flag} '), err
        assert 'no such file' in err


def test_a_weights_file_that_fails_to_load_is_one_line(tmp_path, capsys):
    """A file that is there but is no checkpoint: the builder's error as one line, exit 2, no traceback."""
    bad = tmp_path / 'notes.pth'
    bad.write_text('these are not weights')
    assert main(['--backbone', str(bad), '--random-weights', '--device', 'cpu', '--precision', 'fp32',
                 '--port', '0']) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('declip-mm serve: error:')]
    assert len(errors) == 1 and 'cannot build the segmenter' in errors[0] and 'notes.pth' in errors[0], err
    assert 'Traceback' not in err


def test_help_is_whole(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['--help'])
    assert exit_.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert 'see the overlay and the area of every class.' in text                # was cut after "and the"
    for option in ('--random-weights', '--max-pixels', '--allowed-hosts', '--timeout', '--request-timeout',
                   '--max-connections', '--max-queued', '--max-upload-mb'):
        assert option in text


def test_a_server_with_weights_shows_no_banner(served):
    _, address = served(SegmentationService(CountingSegmenter(), 'EVA02-B-16, backbone=b.pth'))
    status, page = get(address, '/')
    assert status == 200
    banner = re.search(r'<p id="random-weights"[^>]*>', page.decode())
    assert banner and 'hidden' in banner.group(0)
    info = json.loads(get(address, '/api/info')[1])
    assert info['random_weights'] is False and 'warning' not in info
    status, answer = post(address, dict(image=small_png(), vocabulary='cat'))
    assert status == 200 and answer['random_weights'] is False and 'warning' not in answer
    assert decode_png(answer['overlay']).shape == (8, 8, 3)                # the segmenter's overlay, no band


def test_random_weights_mark_the_overlay(served):
    _, address = served(SegmentationService(CountingSegmenter(), 'fake', random_weights=True))
    status, answer = post(address, dict(image=small_png(), vocabulary='cat'))
    assert status == 200 and answer['random_weights'] is True and answer['warning'] == RANDOM_WEIGHTS_WARNING
    overlay = decode_png(answer['overlay'])
    assert overlay.shape == (8 + BAND_HEIGHT, 8, 3) and (overlay[BAND_HEIGHT:] == (0, 128, 0)).all()
    assert (overlay[:BAND_HEIGHT, :2] == (200, 0, 0)).all()


def test_one_command_starts_the_server(photo):
    """``python -m declip_mm.apis.web_app`` (what ``declip-mm serve`` runs): builds the model, prints the address,
    serves the page and the example until Ctrl-C, also when started with SIGINT ignored (as under CI)."""
    import signal as _signal
    previous = _signal.signal(_signal.SIGINT, _signal.SIG_IGN)   # the child inherits SIG_IGN, as from a background shell
    import signal
    command = [sys.executable, '-m', 'declip_mm.apis.web_app', '--port', '0', '--model-name', 'DeCLIP-Tiny-ViT-16',
               '--random-weights', '--device', 'cpu', '--precision', 'fp32', '--example-image', str(photo)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                      os.environ.get('PYTHONPATH', '')]))
    try:
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        _signal.signal(_signal.SIGINT, previous)
    try:
        address = None
        for line in proc.stderr:                                           # until the server says where it is
            if line.startswith('[declip-mm serve] open http://'):
                address = line.split('open ', 1)[1].split('/ ', 1)[0]
                break
        assert address and address.startswith('http://127.0.0.1:'), 'the server did not start'
        with urllib.request.urlopen(address + '/api/info', timeout=30) as answer:
            info = json.loads(answer.read())
        assert 'DeCLIP-Tiny-ViT-16' in info['model'] and info['random_weights'] is True
        with urllib.request.urlopen(address + '/api/example', timeout=30) as answer:
            example = json.loads(answer.read())
        assert base64.b64decode(example['image'].split(',', 1)[1]) == photo.read_bytes()
        status, answer = post(address, dict(image=example['image'], vocabulary=example['vocabulary']))
        assert status == 200 and answer['random_weights'] is True
        # the real server process and a real bomb (18 KB, 144 MP): refused from the header, its peak memory unmoved
        peak = peak_rss_mb(proc.pid)
        status, answer = post(address, dict(image=data_url(bomb_png(12000, 12000), 'image/png'), vocabulary='cat'))
        assert status == 413 and '12000 x 12000' in answer['error']
        assert peak_rss_mb(proc.pid) - peak < 50, 'the bomb was decoded'
    finally:
        # keep reading the server's log so a full pipe can never block its exit; generous time on loaded CI cores
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=180) == 0
        finally:
            if proc.poll() is None:      # never leave a server behind
                proc.kill()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    status = Path(f'/proc/{pid}/status').read_text()
    return int(re.search(r'VmHWM:\s+(\d+) kB', status).group(1)) / 1024


# ------------------------------------------------------------------ the page in headless Chromium
class PageParser(HTMLParser):
    """The parts of the dumped DOM the tests read: body attributes, the overlay img, the area rows, the error text."""

    def __init__(self):
        super().__init__()
        self.body, self.overlay, self.rows, self.error, self.error_style = {}, {}, [], '', ''
        self.banner, self.banner_text = None, ''
        self._in_row = self._in_error = self._in_banner = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'body':
            self.body = attrs
        elif tag == 'img' and attrs.get('id') == 'overlay':
            self.overlay = attrs
        elif tag == 'tr' and 'data-name' in attrs:
            self.rows.append(dict(name=attrs['data-name'], fraction=float(attrs['data-fraction']), cells=[]))
            self._in_row = True
        elif tag == 'div' and attrs.get('id') == 'error':
            self._in_error = True
            self.error_style = attrs.get('style', '')
        elif tag == 'p' and attrs.get('id') == 'random-weights':
            self.banner = attrs
            self._in_banner = True

    def handle_endtag(self, tag):
        if tag == 'tr':
            self._in_row = False
        if tag == 'div':
            self._in_error = False
        if tag == 'p':
            self._in_banner = False

    def handle_data(self, data):
        if self._in_row and data.strip():
            self.rows[-1]['cells'].append(data.strip())
        if self._in_error:
            self.error += data
        if self._in_banner:
            self.banner_text += data


def open_in_chromium(page_url, tmp_path, width=1200, height=1100):
    """Load ``page_url`` in headless Chromium until the page is idle: (DOM parser, screenshot (H, W, 3))."""
    if CHROMIUM is None:
        pytest.skip('chromium is not installed (Debian: apt-get install -y chromium)')
    shot = tmp_path / 'page.png'
    command = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               '--disable-default-apps', '--disable-extensions', '--proxy-server=127.0.0.1:9',   # no traffic out
               f'--user-data-dir={tmp_path / "profile"}', f'--window-size={width},{height}',
               '--force-device-scale-factor=1', '--virtual-time-budget=60000', '--dump-dom',
               f'--screenshot={shot}', page_url]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    parser = PageParser()
    parser.feed(proc.stdout)
    return parser, np.asarray(Image.open(shot).convert('RGB'))


def test_the_page_segments_the_example_in_chromium(url, segmenter, photo, tmp_path):
    """The page's own POST passes the Host / Origin / Content-Type checks; random weights show the banner."""
    dom, shot = open_in_chromium(url + '/?example=1', tmp_path)
    assert dom.body.get('data-state') == 'done', (dom.body, dom.error)
    # the page loaded: the header bar's colour across the top of the screenshot
    header = np.abs(shot[5:40].astype(int) - (0x1f, 0x4e, 0x8c)).sum(-1) <= 3
    assert header.mean() > 0.8
    # random weights: the banner is shown, in its colour, across the page
    assert dom.banner is not None and 'hidden' not in dom.banner and dom.banner_text == RANDOM_WEIGHTS_WARNING
    banner = np.abs(shot.astype(int) - (0xff, 0xb3, 0x00)).sum(-1) <= 3
    assert banner.sum() > 0.5 * shot.shape[1] * 20
    result, overlay = expected(segmenter, photo, split_vocabulary(VOCABULARY))
    served_overlay = decode_png(dom.overlay['src'])
    assert np.array_equal(strip_band(served_overlay), overlay)            # with the random-weights band on top
    left, top, w, h = (int(v) for v in dom.overlay['data-rect'].split(','))
    assert (h, w) == served_overlay.shape[:2] and top + h <= shot.shape[0], \
        'the overlay must be on screen at natural size'
    shown = shot[top:top + h, left:left + w].astype(int)
    assert np.abs(shown - served_overlay).mean() < 1.0                    # the overlay's pixels, where the DOM says
    shown = shown[BAND_HEIGHT:]
    photo_rgb = np.asarray(Image.open(photo).convert('RGB')).astype(int)
    assert np.abs(shown[:photo_rgb.shape[0]] - photo_rgb).mean() > 10     # an overlay, not the bare photo
    assert [r['name'] for r in dom.rows] == list(result.areas()) == ['person', 'bicycle', 'car', 'sky', 'tree']
    for row, (name, fraction) in zip(dom.rows, result.areas().items()):
        assert row['fraction'] == pytest.approx(fraction, abs=1e-12)
        assert row['cells'] == [name, f'{100 * fraction:.1f} %']


def test_the_page_shows_a_bad_requests_error_in_chromium(url, tmp_path):
    dom, shot = open_in_chromium(url + '/?example=1&vocabulary=cat,dog,cat', tmp_path)
    assert dom.body.get('data-state') == 'error'
    assert "'cat' is given twice" in dom.error and 'display: block' in dom.error_style
    assert dom.rows == []
    error_box = np.abs(shot.astype(int) - (0xfd, 0xec, 0xee)).sum(-1) <= 3
    assert error_box.sum() > 2000                                          # the error box is on screen
