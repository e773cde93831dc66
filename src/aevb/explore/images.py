"""Images in and out of the explorer, as PNG data URLs.

Out: a tensor (C, H, W) in [0, 1] -> "data:image/png;base64,..." at its own resolution (the
page scales it up). In: a PNG or JPEG data URL (drawn on the page's canvas or uploaded) ->
a tensor of the model's input shape, checked at every step: the URL's form, the base64, the
number of bytes, the format (by its content, not its name), the pixel count before
decoding, a complete decode.
"""
from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
import torch
from torch import Tensor

MAX_BYTES = 4 << 20          # an uploaded image file (PNG/JPEG) of at most 4 MiB ...
MAX_PIXELS = 4096 * 4096     # ... and at most 16 million pixels once decoded
FORMATS = ("PNG", "JPEG")
_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg);base64,(.*)", re.S)


class ImageError(ValueError):
    """An image the explorer cannot take; the message says why; `status` the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def to_data_url(image: Tensor) -> str:
    """(C, H, W) in [0, 1] (values outside are clipped) -> a PNG data URL."""
    from PIL import Image
    a = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tile(images: Tensor, nrow: int, pad: int = 0) -> Tensor:
    """(N, C, H, W) -> one image (C, rows * H, nrow * W): row by row, from the top."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    out = torch.zeros(c, rows * (h + pad), nrow * (w + pad), dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[:, r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = images[i]
    return out


def decode_data_url(url):
    """The PIL image of a PNG or JPEG data URL, fully decoded; ImageError if it is not one."""
    from PIL import Image
    if not isinstance(url, str):
        raise ImageError("image must be a data URL string (data:image/png;base64,...)")
    if len(url) > 64 + 4 * (MAX_BYTES // 3 + 1):  # base64 makes 4 characters of 3 bytes
        raise ImageError(f"image is larger than {MAX_BYTES >> 20} MiB", 413)
    m = _DATA_URL.fullmatch(url)
    if not m:
        raise ImageError("image must be a data URL of a PNG or JPEG (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image: invalid base64") from None
    try:
        img = Image.open(io.BytesIO(raw), formats=FORMATS)
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(f"image is {img.width} x {img.height} pixels; at most {MAX_PIXELS:,} "
                             "are accepted", 413)
        img.load()
    except ImageError:
        raise
    except Exception:  # Pillow raises many kinds for broken files (OSError, SyntaxError, ...)
        raise ImageError("image is not a readable PNG or JPEG file") from None
    return img


def prepare(img, shape, invert: bool = False, fit: bool = False, binarize: bool = False) -> Tensor:
    """A PIL image -> (C, H, W) in [0, 1] for a model of input `shape` (C, H, W): transparent
    parts on black, gray or RGB, optionally inverted, optionally cropped to its ink and
    centred with a margin (`fit`, for a drawing), resized (area averaging), thresholded at
    1/2 when the run's images were binarized."""
    from PIL import Image, ImageOps
    c, h, w = shape
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img.alpha_composite(rgba)
    img = img.convert("L" if c == 1 else "RGB")
    if invert:
        img = ImageOps.invert(img)
    if fit:
        img = _fit(img)
    img = img.resize((w, h), Image.Resampling.BOX if img.width >= w else Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(a[None] if c == 1 else a.transpose(2, 0, 1).copy())
    return (x >= 0.5).float() if binarize else x


def _fit(img, margin: float = 0.15):
    """Crop to the bounding box of the ink (pixels above 1/4 of white) and centre it in a
    square with `margin` of empty border on each side (MNIST's digits fill 20 of 28 pixels)."""
    from PIL import Image
    box = img.convert("L").point(lambda v: 255 if v > 64 else 0).getbbox()
    if box is None:
        return img
    ink = img.crop(box)
    side = int(max(ink.size) / (1 - 2 * margin)) + 1
    out = Image.new(img.mode, (side, side))
    out.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    return out
