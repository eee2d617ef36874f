"""Small files that are expensive to decode, built by hand as an attacker would: each is a few
bytes to a few MB on the wire and costs seconds or gigabytes to a decoder that trusts it."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def animated_webp(width: int, height: int, frames: int = 2) -> bytes:
    """An animation whose canvas is `width` x `height` and whose frames are 1x1 pixel:
    about 140 bytes; libwebp's decoder sizes two RGBA canvases from the header."""
    tiny = encode(Image.new("RGBA", (1, 1), (0, 0, 0, 0)), "WEBP", lossless=True)
    vp8l = tiny[12:]  # the VP8L chunk, its header included
    body = _riff_chunk(b"VP8X", bytes([0x12, 0, 0, 0]) + _u24(width - 1) + _u24(height - 1))
    body += _riff_chunk(b"ANIM", bytes(6))
    frame = _u24(0) * 4 + _u24(100) + b"\0" + vp8l
    body += _riff_chunk(b"ANMF", frame) * frames
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_many_chunks(count: int) -> bytes:
    """A 28x28 PNG with `count` empty private chunks before its pixels (12 bytes each)."""
    ihdr = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"zzZz", b"") * count
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 29 * 28))
        + png_chunk(b"IEND", b"")
    )


def gif_of_many_comments(count: int) -> bytes:
    """A 28x28 GIF with `count` one-byte comment blocks before its frame (5 bytes each)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 28, 28, 0, 0, 0)
    frame = b"," + struct.pack("<HHHH", 0, 0, 28, 28) + b"\0\x02\x02\x4c\x01\0;"
    return head + b"\x21\xfe\x01x\x00" * count + frame


def bmp_of_short_runs(width: int, height: int, size: int) -> bytes:
    """An RLE8 BMP whose data is `size` bytes of one-pixel runs."""
    pixels = b"\x01\x01" * (size // 2)
    palette = b"\0\0\0\0\xff\xff\xff\0" + bytes(254 * 4)
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def tiff_of_many_strips(count: int) -> bytes:
    """A 1 x `count` grey TIFF stored as one strip per row."""
    pixels = b"\x80" * count
    offsets_at = 8 + count
    offsets = struct.pack(f"<{count}I", *range(8, 8 + count))
    counts_at = offsets_at + len(offsets)
    counts = struct.pack(f"<{count}I", *([1] * count))
    tags = [
        (256, 4, 1, 1),
        (257, 4, 1, count),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, count, offsets_at),
        (277, 3, 1, 1),
        (278, 4, 1, 1),
        (279, 4, count, counts_at),
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags)
    ifd_at = counts_at + len(counts)
    return b"II*\x00" + struct.pack("<I", ifd_at) + pixels + offsets + counts + ifd + bytes(4)


def jpeg_of_empty_scans(width: int, height: int, copies: int) -> bytes:
    """A flat progressive JPEG whose last scan (an empty one: nothing but end-of-band runs)
    comes `copies` more times: a few bytes each, a pass over every block each."""
    data = encode(Image.new("L", (width, height), 200), "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * copies + b"\xff\xd9"


def jpeg_of_many_segments(count: int) -> bytes:
    """A 28x28 JPEG with `count` empty comment segments before its frame (4 bytes each)."""
    data = encode(Image.new("L", (28, 28), 200), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def blank(mode: str, size: tuple[int, int], fmt: str = "PNG", **kw) -> bytes:
    """A blank image (refused as having no ink, once decoded): compresses to almost nothing."""
    white = {"1": 1, "L": 255, "P": 0, "I;16": 65535, "F": 1.0}.get(mode, (255,) * len(mode))
    return encode(Image.new(mode, size, white), fmt, **kw)
