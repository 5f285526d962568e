"""Generated test images for the preprocessing checks and benchmarks: deterministic, varied.

``varied_jpegs(seed)`` covers what the device path must reproduce: sizes (landscape, portrait,
square, small enough to be upscaled, extreme aspect ratios), chroma subsampling 4:4:4 / 4:2:2 /
4:2:0, qualities 50-100, grayscale, progressive coding and every EXIF orientation.
``photo_like(w, h, seed)`` is a synthetic RGB scene (gradients, shapes, edges, texture, noise)
that compresses about as a photograph does.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import io
import multiprocessing as mp

import numpy as np
from PIL import Image

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width, 1), y / max(height, 1)
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(2, 9, 3)
    img = np.stack(
        [0.5 + 0.35 * np.sin(freq[c] * u + 1.7 * freq[(c + 1) % 3] * v + phase[c]) for c in range(3)], axis=-1
    )
    for _ in range(12):  # flat discs with hard edges
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * width
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, width))
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, height))
        if x1 <= x0 or y1 <= y0:
            continue
        mask = (x[y0:y1, x0:x1] - cx) ** 2 + (y[y0:y1, x0:x1] - cy) ** 2 < r * r
        img[y0:y1, x0:x1][mask] = rng.uniform(0, 1, 3)
    band = int(height * 0.7)  # fine texture in the lower part
    stripes = np.sin(x[band:] * rng.uniform(0.2, 1.2)) > 0.6
    img[band:][stripes] *= 0.6
    out = np.clip(img * 255, 0, 255).astype(np.uint8)
    noise = rng.integers(-8, 9, size=out.shape, dtype=np.int16)  # sensor-like noise
    out = np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def jpeg_bytes(
    image: Image.Image,
    quality: int = 90,
    subsampling: str = "4:2:0",
    progressive: bool = False,
    orientation: int | None = None,
) -> bytes:
    buf = io.BytesIO()
    kw: dict[str, int | bytes] = {"quality": quality, "progressive": progressive}
    if image.mode != "L":
        kw["subsampling"] = SUBSAMPLING[subsampling]
    if orientation is not None:
        kw["exif"] = exif_with_orientation(orientation)
    image.save(buf, format="JPEG", **kw)
    return buf.getvalue()


SIZES = [
    (1920, 1080),
    (1080, 1920),
    (640, 480),
    (300, 300),
    (257, 256),
    (256, 331),
    (224, 224),
    (200, 150),
    (97, 61),
    (1000, 229),
    (37, 500),
    (2048, 1536),
    (1201, 799),
]


def varied_jpegs(seed: int = 0, sizes=SIZES) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) covering sizes x subsampling x quality x grayscale x progressive x
    EXIF orientation, one variation per image (not the full product)."""
    rng = np.random.default_rng(seed)
    out = []
    subs = list(SUBSAMPLING)
    k = 0
    for w, h in sizes:
        for variant in range(4):
            img = photo_like(w, h, seed=seed * 1000 + k)
            sub = subs[k % 3]
            quality = int(rng.integers(50, 101))
            gray = variant == 3
            progressive = variant == 2
            orientation = (k % 8) + 1 if variant >= 1 else None
            if gray:
                img = img.convert("L")
            name = (
                f"{w}x{h}-{'gray' if gray else sub}-q{quality}"
                f"{'-prog' if progressive else ''}{f'-o{orientation}' if orientation else ''}"
            )
            out.append((name, jpeg_bytes(img, quality, sub, progressive, orientation)))
            k += 1
    return out


def full_hd_jpeg(seed: int, quality: int = 90) -> bytes:
    return jpeg_bytes(photo_like(1920, 1080, seed), quality)


def full_hd_jpegs(n: int, seed: int = 0, quality: int = 90, workers: int = 1) -> list[bytes]:
    """``n`` distinct 1920x1080 JPEGs (4:2:0), made in ``workers`` processes (~0.4 s each)."""
    seeds = range(seed, seed + n)
    if workers <= 1 or n < 2 * workers:
        return [full_hd_jpeg(s, quality) for s in seeds]
    ctx = mp.get_context("spawn")  # the caller may already have started OpenMP threads
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(
            pool.map(
                functools.partial(full_hd_jpeg, quality=quality), seeds, chunksize=max(1, n // (workers * 4))
            )
        )


def fixture_jpegs(folder) -> list[tuple[str, bytes]]:
    """The PNGs in ``folder`` (the official fixture's images: grayscale, RGBA, odd sizes),
    decoded as the Pillow path decodes them and saved as JPEG at quality 95 (grayscale ones as
    1-component JPEGs): (name, bytes), sorted by name."""
    from pathlib import Path

    from poundcam.preprocess.decode import decode_image

    out = []
    for path in sorted(Path(folder).glob("*.png")):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            gray = im.mode in ("L", "LA", "I;16", "I")
        image = decode_image(data).image
        if gray:
            image = image.convert("L")
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=95)
        out.append((path.stem, buf.getvalue()))
    return out
