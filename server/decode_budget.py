"""What decoding an upload will cost, read from its structure before any decoder runs.

The pixel cap alone bounds neither memory nor time: a pixel costs 1 byte in grey and 17 in
floating point, and a small file can make a decoder loop for seconds (a JPEG of thousands of
empty scans, a PNG of a million empty chunks). Each check here walks a file's headers, stops
as soon as a count is over its limit, and never decodes a pixel. Limits come with the figures
that chose them; `python -m bench.decode_cost` measures them again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image

from server.errors import DecodeTooComplex, DecodeTooLarge

MIB = 2**20
# Memory one image may take while it is decoded and turned grey: with a worker's ~85 MB at
# rest, this keeps a process under 300 MB whatever it is sent.
MAX_DECODE_BYTES = 160 * MIB
# Bytes held at once per pixel, by mode, while decoding and converting to grey (`to_grey`
# converts at full size before it shrinks): peak RSS of `preprocess` on 4000x4000 images, each
# in a fresh process, rounded up (bench/decode_cost.py).
BYTES_PER_PIXEL = {
    "1": 2.5,  # stored one byte per pixel: 8x the file's bits
    "L": 1.5,
    "P": 2.5,
    "RGB": 5.5,  # Pillow stores 4 bytes per RGB pixel
    "CMYK": 9.5,
    "I;16": 15.0,  # to_grey's float32 copies
    "I;16L": 15.0,
    "I;16B": 15.0,
    "I;16N": 15.0,
    "F": 17.0,
}
ALPHA_BYTES_PER_PIXEL = 13.5  # any mode with transparency: composited through RGBA and LA
WEBP_BYTES_PER_PIXEL = 16.5  # libwebp's decoder keeps two RGBA canvases beside Pillow's copy
OTHER_BYTES_PER_PIXEL = 17.0  # modes not measured: as costly as the costliest
JPEG_BYTES_PER_BLOCK = 128  # a multi-scan JPEG keeps every 8x8 block's 64 int16 coefficients

# Decode time. A progressive JPEG's scan visits every block of its components, even an empty
# scan: 28 KB of 3,000 empty scans over 4000x4000 pixels took 14 s. libjpeg's own encoders
# write 6 to 10 scans; 40 MP in 10 scans is about 10 M block visits.
MAX_JPEG_SCANS = 100
MAX_JPEG_BLOCK_VISITS = 16_000_000  # blocks summed over the scans: 0.8 s here
# Headers that Pillow parses in Python, one loop turn each (a few us per turn): a million
# empty PNG chunks took 7.4 s, two million GIF comment blocks 3.5 s, a million TIFF strips
# 14 s, 5 million BMP run-length codes 12 s. Real files use tens of segments and chunks, and a
# 10 MiB PNG in 1 KiB chunks has 10,000 chunks.
MAX_JPEG_SEGMENTS = 1_000  # markers before the first scan
MAX_PNG_CHUNKS = 10_000
MAX_GIF_BLOCKS = 10_000  # extension sub-blocks before the first frame
MAX_TIFF_ENTRIES = 1_000  # tags in the first directory
MAX_TIFF_STRIPS = 10_000  # strips or tiles
MAX_BMP_RLE_BYTES = 256 * 1024  # run-length data, decoded by Pillow in Python

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset((0xC2, 0xC6, 0xCA, 0xCE))
_NOT_FF = re.compile(rb"[^\xff]")


@dataclass(frozen=True)
class Structure:
    """What a file's headers say about its decode, beyond what Pillow reports."""

    decoder_bytes: int = 0  # the decoder's own buffers (a multi-scan JPEG's coefficients)
    canvas: tuple[int, int] | None = None  # a WebP's canvas, read before Pillow opens it


def inspect(data: bytes) -> Structure:
    """Walks the headers of `data`; raises DecodeTooComplex for a count over its limit.
    Anything it cannot make sense of is left to Pillow, which refuses it as corrupt."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _png(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _gif(data)
    elif data.startswith((b"II", b"MM")):
        _tiff(data)
    elif data.startswith(b"BM"):
        _bmp(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Structure(canvas=_webp_canvas(data))
    return Structure()


def peak_bytes(im: Image.Image, structure: Structure) -> int:
    """Memory decoding `im` (opened, not loaded; a JPEG after `draft`) and making it grey
    will hold at once."""
    w, h = im.size
    if im.format == "WEBP":
        per_pixel = WEBP_BYTES_PER_PIXEL
    elif im.has_transparency_data:
        per_pixel = ALPHA_BYTES_PER_PIXEL
    else:
        per_pixel = BYTES_PER_PIXEL.get(im.mode, OTHER_BYTES_PER_PIXEL)
    return math.ceil(w * h * per_pixel) + structure.decoder_bytes


def check_bytes(need: int, w: int, h: int, mode: str) -> None:
    if need > MAX_DECODE_BYTES:
        raise DecodeTooLarge(
            f"Decoding this image takes about {need / MIB:,.0f} MiB ({w:,} x {h:,} pixels, "
            f"mode {mode}); the limit is {MAX_DECODE_BYTES // MIB} MiB per image."
        )


def _too_complex(what: str, count: int, limit: int) -> DecodeTooComplex:
    return DecodeTooComplex(f"The image has {count:,} {what}; the limit is {limit:,}.")


def _u16(data: bytes, pos: int, order: str = "big") -> int:
    return int.from_bytes(data[pos : pos + 2], order)


def _u32(data: bytes, pos: int, order: str = "big") -> int:
    return int.from_bytes(data[pos : pos + 4], order)


def _jpeg(data: bytes) -> Structure:
    # Segments up to the first scan, found as libjpeg finds them: bytes that are not 0xFF are
    # skipped, then fill bytes, then the marker.
    pos, segments, blocks = 2, 0, None
    progressive = False
    while True:
        i = data.find(b"\xff", pos)
        m = _NOT_FF.search(data, i + 1) if i >= 0 else None
        if m is None:
            return Structure()  # no scan: the decoder refuses it
        marker, pos = data[m.start()], m.start() + 1
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _too_complex("JPEG markers before its first scan", segments, MAX_JPEG_SEGMENTS)
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # not a segment
        if marker == 0xD9:
            return Structure()
        if marker == 0xDA:
            break
        length = _u16(data, pos)
        if marker in _SOF and blocks is None:
            blocks = _jpeg_blocks(data[pos + 2 : pos + length])
            progressive = marker in _PROGRESSIVE
        pos += max(length, 2)
    if not blocks:
        return Structure()
    # Every scan from here on. 0xFF 0xDA cannot occur inside entropy-coded data (a 0xFF there
    # is followed by 0x00 or a restart marker), so counting it never misses a scan; inside
    # another segment's payload it would only over-count.
    everything = sum(blocks.values())
    scans = visits = 0
    at = pos - 2
    while (at := data.find(b"\xff\xda", at)) >= 0:
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise _too_complex("JPEG scans", scans, MAX_JPEG_SCANS)
        count = data[at + 4] if at + 4 < len(data) else 0
        ids = data[at + 5 : at + 5 + 2 * count : 2]
        if len(ids) == count and count and all(c in blocks for c in ids):
            visits += sum(blocks[c] for c in set(ids))
        else:
            visits += everything
        at += 2
    if visits > MAX_JPEG_BLOCK_VISITS:
        raise DecodeTooComplex(
            f"The JPEG's {scans:,} scans visit {visits:,} blocks of 8x8 pixels; "
            f"the limit is {MAX_JPEG_BLOCK_VISITS:,}."
        )
    multi_scan = progressive or scans > 1
    return Structure(decoder_bytes=JPEG_BYTES_PER_BLOCK * everything if multi_scan else 0)


def _jpeg_blocks(frame: bytes) -> dict[int, int] | None:
    """8x8 blocks per component id, from a start-of-frame segment's body."""
    if len(frame) < 6:
        return None
    height, width, count = _u16(frame, 1), _u16(frame, 3), frame[5]
    comps = [frame[6 + 3 * k : 9 + 3 * k] for k in range(count)]
    if not comps or any(len(c) < 3 for c in comps):
        return None
    hmax = max(c[1] >> 4 for c in comps) or 1
    vmax = max(c[1] & 15 for c in comps) or 1
    return {
        c[0]: math.ceil(math.ceil(width * (c[1] >> 4) / hmax) / 8)
        * math.ceil(math.ceil(height * (c[1] & 15) / vmax) / 8)
        for c in comps
    }


def _png(data: bytes) -> None:
    # Pillow reads every chunk up to IEND, or, in an animation, up to the second frame.
    pos, chunks, image_data = 8, 0, False
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex("PNG chunks", chunks, MAX_PNG_CHUNKS)
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND" or (kind == b"fcTL" and image_data):
            return
        image_data |= kind == b"IDAT"
        pos += 12 + _u32(data, pos)


def _gif(data: bytes) -> None:
    # Extension blocks before the first frame are read by Pillow in Python; the frame's own
    # data blocks by its decoder in C.
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = 0
    while pos + 1 < len(data) and data[pos] == 0x21:
        pos += 2
        while pos < len(data):
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise _too_complex("GIF extension blocks", blocks, MAX_GIF_BLOCKS)
            size = data[pos]
            pos += 1 + size
            if size == 0:
                break


def _tiff(data: bytes) -> None:
    order = "little" if data.startswith(b"II") else "big"
    magic = _u16(data, 2, order)
    if magic == 42:
        offset, count_size, entry_size, count_at = _u32(data, 4, order), 2, 12, 4
    elif magic == 43:  # BigTIFF
        offset, count_size, entry_size, count_at = int.from_bytes(data[8:16], order), 8, 20, 12
    else:
        return
    entries = int.from_bytes(data[offset : offset + count_size], order)
    if entries > MAX_TIFF_ENTRIES:
        raise _too_complex("tags in its first TIFF directory", entries, MAX_TIFF_ENTRIES)
    first = offset + count_size
    for k in range(entries):
        entry = data[first + k * entry_size : first + (k + 1) * entry_size]
        if len(entry) < entry_size:
            return
        tag = int.from_bytes(entry[:2], order)
        if tag in (273, 279, 324, 325):  # strip or tile offsets and byte counts
            count = int.from_bytes(entry[4 : 4 + count_at], order)
            if count > MAX_TIFF_STRIPS:
                raise _too_complex("TIFF strips or tiles", count, MAX_TIFF_STRIPS)


def _bmp(data: bytes) -> None:
    if len(data) < 34 or _u32(data, 14, "little") < 40:
        return
    if _u32(data, 30, "little") in (1, 2):  # RLE8, RLE4
        rle = len(data) - _u32(data, 10, "little")
        if rle > MAX_BMP_RLE_BYTES:
            raise DecodeTooComplex(
                f"The BMP has {rle:,} bytes of run-length data; the limit is {MAX_BMP_RLE_BYTES:,}."
            )


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """The canvas size from a WebP's first chunk: Pillow's WebP reader creates libwebp's
    decoder, which sizes its canvases, as it opens the file."""
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return _u16(data, 26, "little") & 0x3FFF, _u16(data, 28, "little") & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _u32(data, 21, "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
