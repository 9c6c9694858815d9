"""Image files -> upright RGB pictures: the one decoder of every entry point (the label job's decode stage, the
single-image command, the web page, previews), so a file means the same pixels wherever it is labeled.

`prepare` is the label job's CPU stage: file bytes -> an upright RGB image at the model's resolution, or an error
message. It runs in Ray Data tasks ahead of the model replicas, so decoding overlaps generation. Its output per
input has a fixed shape (uint8[S, S, 3] pixels, zeros for a failed input) because mixed-size arrays break Arrow
tensor columns. Resizing here is the model's own bicubic squash, so the replica's image processor finds the size
already right and the pixels are exactly those `PaliGemma.generate` would compute from the original image.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

from labeling.errors import DECODE, READ, TOO_LARGE
from storage import read_bytes

# Pillow's own limit (89.5 Mpx warns, twice that raises); ours is checked before any pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """Bytes that are no image we read (kind "decode") or an image over the pixel limit (kind "too-large")."""

    def __init__(self, message: str, kind: str = DECODE):
        super().__init__(message)
        self.kind = kind


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited on white, 16/32-bit and float scaled to 8 bits, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16-bit PNG/TIFF grayscale opens as I;16 or I: scale the 16-bit range (or the data's range when it is
        # wider, e.g. float or 32-bit) to 0..255 rather than clipping, which would turn most pixels white.
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) <= 65535 and a.min(initial=0) >= 0 and mode != "F" else a.max(initial=1)
        low = 0.0 if mode != "F" else a.min(initial=0)
        scaled = np.clip((a - low) / max(top - low, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes of an image file -> upright (EXIF orientation applied) RGB image. Raises ImageDecodeError."""
    import io

    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels} "
                    "(--max-pixels)",
                    TOO_LARGE,
                )
            image.load()  # a truncated file fails here, not later in another stage
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageDecodeError("cannot decode image: not an image file, or a format Pillow does not read") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # Pillow reports unknown formats, truncated data and corrupt headers with these types.
        raise ImageDecodeError(f"cannot decode image: {e}") from e


def open_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image file at a local path or URI, decoded as the label job decodes it. Raises OSError (unreadable)
    or ImageDecodeError."""
    return decode_image(read_bytes(path), max_pixels)


def _decoded(row: dict, max_pixels: int) -> tuple[dict, Image.Image | None]:
    """The row without its bytes, plus width, height, error and error_kind; and the decoded image, or None when
    it could not be read ("" for no error, so that the columns' Arrow type is a string in every block)."""
    out = {k: v for k, v in row.items() if k != "bytes"}
    try:
        data = row.get("bytes")
        image = decode_image(data if data is not None else read_bytes(row["path"]), max_pixels)
    except (OSError, ImageDecodeError) as e:
        decoding = isinstance(e, ImageDecodeError)
        out["width"], out["height"] = 0, 0
        out["error"] = str(e) if decoding else f"cannot read file: {e}"
        out["error_kind"] = e.kind if decoding else READ
        return out, None
    out["width"], out["height"] = image.width, image.height
    out["error"], out["error_kind"] = "", ""
    return out, image


def prepare(row: dict, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """One input row (image_id, path, prompt[, bytes]) -> the row plus width, height, pixels, error, error_kind.

    The image comes from the row's `bytes` when it has them (a Parquet dataset's rows), from its path otherwise.
    Never raises for a bad image: the error and its kind go into the row and the replica passes them through
    (its pixels are zeros). size 0: the whole image for tiling instead (prepare_whole).
    """
    if size == 0:
        return prepare_whole(row, max_pixels)
    out, image = _decoded(row, max_pixels)
    if image is None:
        out["pixels"] = np.zeros((size, size, 3), dtype=np.uint8)
    else:
        out["pixels"] = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    return out


def prepare_whole(row: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """The tiled job's CPU stage: the upright RGB image at its own size as raw bytes (`rgb`, height x width x 3),
    for the replica to cut into tiles. The decoded image is held once: its pixels go out as they are, never as a
    second array."""
    out, image = _decoded(row, max_pixels)
    out["rgb"] = b"" if image is None else image.tobytes()
    return out
