"""Decode one picture into the uint8 array a convnet takes: the one preprocessing path.

The folder reader, ``gossipnet predict`` and the status page's "try an image" box all call
``decode_image``, so an image is resized and converted the same way in training and in use.
Pillow decodes. Untrusted bytes are bounded before decoding: the encoded size, the
formats Pillow may try (no plug-in zoo: PNG, JPEG, GIF, BMP, WebP, TIFF), and the pixel
count read from the header (a decompression bomb declares a huge canvas in a small file;
Pillow's own ``DecompressionBombWarning`` is raised as an error here too).

Resizing squashes the whole picture to ``size x size`` (bilinear, antialiased when
shrinking), as Keras's ``image_dataset_from_directory`` does by default; the EXIF
orientation a phone writes is applied first. Colour is converted as torchvision's
``ImageFolder`` loader does: ``convert("RGB")`` or ``convert("L")`` (ITU-R 601-2 luma).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What torchvision's IMG_EXTENSIONS and Keras's ALLOWLIST_FORMATS agree on, minus the rare ones.
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
MAX_FILE_BYTES = 64 << 20  # a 64 MB picture is not a training image; refuse before reading
MAX_PIXELS = 64_000_000  # a 64-megapixel canvas: more than any phone camera writes
COLOR_MODES = {"grayscale": 1, "rgb": 3}  # Keras's color_mode names
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class BadImage(ValueError):
    """The bytes are not a picture we can decode; the message says why (for counting)."""


def decode_image(source: str | os.PathLike | bytes, size: int, channels: int,
                 *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A (channels, size, size) uint8 array from a file path or encoded bytes.

    Raises ``BadImage`` (never anything else for bad input) when the file is unreadable,
    too large, not an image of an allowed format, truncated, or a decompression bomb.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    data = source if isinstance(source, (bytes, bytearray)) else _read(Path(source), max_bytes)
    if len(data) > max_bytes:
        raise BadImage(f"{len(data):,} bytes is more than the {max_bytes:,} allowed for one image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise BadImage(f"{w}x{h} pixels is more than the {max_pixels:,} allowed")
                # JPEG can decode at 1/2, 1/4 or 1/8 scale (DCT scaling, what Image.thumbnail
                # uses): a photo bound for 32x32 decodes many times faster, at least size x size.
                img.draft(img.mode, (size, size))
                img.load()
                img = ImageOps.exif_transpose(img)
                img = img.convert("L" if channels == 1 else "RGB")
                img = img.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not a {'/'.join(FORMATS)} image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Pillow reports truncation and corrupt streams as OSError/ValueError/SyntaxError.
        raise BadImage(f"corrupt or truncated image ({exc or type(exc).__name__})") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def is_colour(path: str | os.PathLike) -> bool | None:
    """Whether a file's header declares colour (None: not a readable image). Cheap: no pixels."""
    try:
        with Image.open(path, formats=FORMATS) as img:
            return img.mode not in GREY_MODES
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        if not path.is_file():
            raise BadImage("not a regular file")
        if path.stat().st_size > max_bytes:
            raise BadImage(f"{path.stat().st_size:,} bytes is more than the {max_bytes:,} allowed")
        return path.read_bytes()
    except OSError as exc:
        raise BadImage(f"unreadable ({exc.strerror or exc})") from None
