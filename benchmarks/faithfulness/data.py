"""Ground-truth images: photo-like scenes, and fakes that carry one planted local artifact.

Every image is a reproducible function of (seed, split, batch index): a scene of smooth
1/f colour texture, a few soft-edged shapes, a lighting ramp and sensor noise. A "fake" image
carries, inside one rectangle of random position and size, one of three kinds of artifact
(``DataSettings.artifact``):

- ``"upsampling"``: the traces an up-sampling generator leaves: the region is re-synthesised by
  a 2x nearest-neighbour up-sample (2x2 blocks, which remove the fine noise and put periodic
  peaks into the spectrum) plus a checkerboard aligned to the pixel grid, as a generator's
  stride-2 transposed convolution leaves it (random amplitude and tint).
- ``"sensor-splice"``: a region spliced in from another camera, which carries that camera's
  sensor fingerprint: its photo-response non-uniformity (PRNU), a fixed per-pixel gain pattern
  that multiplies the recorded light. It keeps the content, its noise and its sharpness, is
  broadband rather than one frequency, scales with the brightness (vanishes in dark areas),
  and is one fixed pattern of one sensor: a camera trace, not a generator's. Like the
  checkerboard it is exaggerated so that a small detector learns it in a few hundred steps:
  a relative gain of 10-20% (random per image; real sensors stay near 1%), repeated every 16
  pixels (the patch size: one filter shared by every patch can match it) and symmetric under
  the training augmentations. At 3-8% the small detector had not learned it after 200 steps.
- ``"watermark"``: a generated region that carries its generator's invisible watermark, pasted
  into the photograph: a fixed +-1 message spread over the mid-frequency DCT coefficients of
  every 8x8 block, added to the luminance. Unlike the sensor trace it is additive (as strong in
  dark areas as in bright ones), the same in the three colour channels, band-limited to the
  mid frequencies, and a mark put there on purpose by the source. Exaggerated like the others
  (standard deviation 0.05-0.1 in 0..1 intensity; real watermarks stay near 0.01), with a
  16-pixel tile symmetric under the training augmentations.

The region is blended in with a feathered edge; a final faint noise covers the whole image, so
"no noise" alone never marks the region, and every image is quantized to 8 bits. "Real"
images carry no artifact. The planted mask (blend weight at least 0.5) is returned with every
fake.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from poundcam.preprocess.transform import CLIP_MEAN, CLIP_STD

SPLITS = {"train": 0, "test": 1, "localize": 2, "select": 3}
ARTIFACTS = ("upsampling", "sensor-splice", "watermark")
# Settings that only one artifact reads: left out of the other's key (DataSettings.key_fields).
OWNED_BY = {
    "checker_min": "upsampling",
    "checker_max": "upsampling",
    "upsample": "upsampling",
    "sensor_min": "sensor-splice",
    "sensor_max": "sensor-splice",
    "sensor_tile": "sensor-splice",
    "sensor_seed": "sensor-splice",
    "watermark_min": "watermark",
    "watermark_max": "watermark",
    "watermark_seed": "watermark",
}


@dataclasses.dataclass(frozen=True)
class DataSettings:
    size: int = 224
    n_shapes: int = 6
    noise_max: float = 0.03  # sensor noise sigma, uniform in [0, noise_max]
    post_noise_max: float = 0.008  # faint noise over the whole image after the blend
    region_min: int = 40  # planted rectangle side, pixels
    region_max: int = 96
    feather: float = 3.0  # soft edge of the blend, pixels
    checker_min: float = 0.1  # checkerboard amplitude (intensity units 0..1)
    checker_max: float = 0.2
    upsample: int = 2  # nearest-neighbour up-sampling factor of the region
    artifact: str = "upsampling"  # one of ARTIFACTS
    sensor_min: float = 0.1  # PRNU amplitude (relative gain) of the spliced region's camera
    sensor_max: float = 0.2
    sensor_tile: int = 16  # the pattern's period, pixels (the patch size)
    sensor_seed: int = 7  # draws the other camera's pattern
    watermark_min: float = 0.05  # the watermark's amplitude (standard deviation, intensity units)
    watermark_max: float = 0.1
    watermark_seed: int = 11  # draws the watermark's message

    def __post_init__(self):
        if self.artifact not in ARTIFACTS:
            raise ValueError(f"artifact must be one of {ARTIFACTS}, not {self.artifact!r}")

    def key_fields(self) -> dict:
        """The settings that shape this artifact's data, which the detector cache key hashes
        (train.settings_key): those another artifact alone reads are left out, and so is the
        name of the first artifact, so the up-sampling detectors keep the keys they had before
        a second artifact existed."""
        out = dataclasses.asdict(self)
        for name, owner in OWNED_BY.items():
            if owner != self.artifact:
                del out[name]
        if self.artifact == ARTIFACTS[0]:
            del out["artifact"]
        return out


@dataclasses.dataclass
class Batch:
    images: torch.Tensor  # [B, 3, H, W] float32 in 0..1 (not normalized)
    labels: torch.Tensor  # [B] int64, 1 = fake
    masks: torch.Tensor  # [B, H, W] bool, the planted region (all False for real images)

    def normalized(self) -> torch.Tensor:
        return normalize(self.images)


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


def generator(seed: int, split: str, index: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + SPLITS[split] * 7_919_111 + index)
    return g


def _uniform(g: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def texture(g: torch.Generator, b: int, size: int) -> torch.Tensor:
    """Smooth colour texture with a 1/f^alpha amplitude spectrum, [B, 3, H, W] around 0."""
    noise = torch.randn(b, 3, size, size, generator=g)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
    alpha = _uniform(g, (b, 1, 1, 1), 1.3, 2.2)
    spec = torch.fft.rfft2(noise) * f.pow(-alpha)
    field = torch.fft.irfft2(spec, s=(size, size))
    field = field - field.mean(dim=(2, 3), keepdim=True)
    field = field / field.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    # correlate the channels like natural colour: a luminance part plus weaker chroma
    mix = torch.eye(3) * 0.35 + 0.65 * torch.ones(3, 3) / 3
    field = torch.einsum("cd,bdhw->bchw", mix, field)
    return field * _uniform(g, (b, 1, 1, 1), 0.08, 0.2)


def shapes(g: torch.Generator, b: int, size: int, n: int, base: torch.Tensor) -> torch.Tensor:
    """Paint n soft-edged ellipses and rectangles of flat-ish colour over ``base``."""
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32) + 0.5,
        torch.arange(size, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    cx = _uniform(g, (b, n, 1, 1), 0, size)
    cy = _uniform(g, (b, n, 1, 1), 0, size)
    rx = _uniform(g, (b, n, 1, 1), 10, 60)
    ry = _uniform(g, (b, n, 1, 1), 10, 60)
    theta = _uniform(g, (b, n, 1, 1), 0, math.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / rx
    v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / ry
    is_rect = torch.rand(b, n, 1, 1, generator=g) < 0.4
    dist = torch.where(is_rect, torch.maximum(u.abs(), v.abs()), torch.sqrt(u * u + v * v))
    edge = _uniform(g, (b, n, 1, 1), 0.5, 3.0)  # softness in pixels
    alpha = torch.sigmoid_((1 - dist).mul_(torch.minimum(rx, ry) / edge))  # [B, n, H, W]
    colour = _uniform(g, (b, n, 3, 1, 1), 0.05, 0.95)
    slope = _uniform(g, (b, n, 1, 1), -0.15, 0.15)
    out = base.expand(b, 3, size, size).clone()
    for k in range(n):
        a = alpha[:, k, None]
        paint = colour[:, k] * (1 + slope[:, k, None] * u[:, k, None])  # shaded flat colour
        out.lerp_(paint, a)
    return out


def scenes(g: torch.Generator, b: int, s: DataSettings) -> torch.Tensor:
    """Clean photo-like scenes with sensor noise, [B, 3, H, W] in 0..1."""
    size = s.size
    base = _uniform(g, (b, 3, 1, 1), 0.2, 0.8) + texture(g, b, size)
    img = shapes(g, b, size, s.n_shapes, base)
    img = img + 0.5 * texture(g, b, size)  # texture on the shapes too
    ramp = torch.linspace(-1, 1, size)
    angle = _uniform(g, (b, 1, 1), 0, 2 * math.pi)
    light = torch.cos(angle) * ramp[None, None, :] + torch.sin(angle) * ramp[None, :, None]
    img = img * (1 + _uniform(g, (b, 1, 1), 0, 0.25) * light)[:, None]
    sigma = _uniform(g, (b, 1, 1, 1), 0, s.noise_max)
    img = img + sigma * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


def plant(g: torch.Generator, img: torch.Tensor, s: DataSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Plant one artifact of kind ``s.artifact`` per image; returns (images, masks [B, H, W] bool)."""
    b, _, size, _ = img.shape
    h = torch.randint(s.region_min, s.region_max + 1, (b,), generator=g)
    w = torch.randint(s.region_min, s.region_max + 1, (b,), generator=g)
    top = (torch.rand(b, generator=g) * (size - h + 1)).floor()
    left = (torch.rand(b, generator=g) * (size - w + 1)).floor()
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    # signed distance inside the rectangle along each axis -> feathered weight
    dy = torch.minimum(coords[None] - top[:, None], top[:, None] + h[:, None] - coords[None])
    dx = torch.minimum(coords[None] - left[:, None], left[:, None] + w[:, None] - coords[None])
    wy = torch.sigmoid(dy / (s.feather / 3))
    wx = torch.sigmoid(dx / (s.feather / 3))
    weight = (wy[:, :, None] * wx[:, None, :])[:, None]  # [B, 1, H, W]
    artifact = PLANTERS[s.artifact](g, img, s)
    out = img * (1 - weight) + artifact * weight
    return out, weight[:, 0] >= 0.5


def upsampling(g: torch.Generator, img: torch.Tensor, s: DataSettings) -> torch.Tensor:
    """The whole images as an up-sampling generator would leave them (plant() keeps the region)."""
    b, _, size, _ = img.shape
    # the artifact: 2x nearest-neighbour up-sample of the down-sampled content ...
    f = s.upsample
    shift = torch.randint(0, f, (2,), generator=g).tolist()
    rolled = torch.roll(img, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    up = F.interpolate(F.avg_pool2d(rolled, f), scale_factor=f, mode="nearest")
    up = torch.roll(up, shifts=(shift[0], shift[1]), dims=(2, 3))
    # ... plus a pixel-grid checkerboard of random amplitude (transposed-convolution trace)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((yy + xx)[None, None] % 2) * 2.0 - 1.0  # aligned to the pixel grid
    amp = _uniform(g, (b, 1, 1, 1), s.checker_min, s.checker_max)
    tint = _uniform(g, (b, 3, 1, 1), 0.6, 1.0)
    return up + amp * tint * checker


def sensor_pattern(s: DataSettings) -> torch.Tensor:
    """The other camera's photo-response non-uniformity: a fixed zero-mean, unit-variance
    per-pixel gain pattern [3, H, W] (drawn once from ``sensor_seed``), tiled every
    ``sensor_tile`` pixels and made symmetric under the training augmentations (180-degree
    rotation and transpose), so that every augmented view carries the same pattern."""
    g = torch.Generator().manual_seed(s.sensor_seed)
    t = torch.randn(3, s.sensor_tile, s.sensor_tile, generator=g)
    t = t + t.flip(1, 2)
    t = t + t.transpose(1, 2)
    t = (t - t.mean()) / t.std()
    reps = math.ceil(s.size / s.sensor_tile)
    return t.repeat(1, reps, reps)[:, : s.size, : s.size]


def sensor_splice(g: torch.Generator, img: torch.Tensor, s: DataSettings) -> torch.Tensor:
    """The whole images as another camera's sensor would record them (plant() keeps the
    region): each pixel's value scaled by (1 + amplitude x the pattern), amplitude random."""
    b = img.shape[0]
    amp = _uniform(g, (b, 1, 1, 1), s.sensor_min, s.sensor_max)
    return img * (1 + amp * sensor_pattern(s)[None])


WATERMARK_BLOCK = 8  # the block of the block-DCT embedding, pixels
WATERMARK_BAND = (4, 5, 6)  # the DCT frequencies (u + v) that carry the message: the mid band


def dct_basis(n: int) -> torch.Tensor:
    """The (unnormalized) DCT-II basis of length ``n``: row u is cos((2x + 1) u pi / 2n), float64."""
    x = torch.arange(n, dtype=torch.float64)
    return torch.cos((2 * x[None, :] + 1) * x[:, None] * math.pi / (2 * n))


def watermark_pattern(s: DataSettings) -> torch.Tensor:
    """A generator's invisible watermark: a fixed +-1 message spread over the mid-band DCT
    coefficients of every 8x8 block, as a luminance pattern [1, H, W] of zero mean and unit
    variance (the same in the three channels). One 16x16 tile (2x2 blocks, the patch size) is
    drawn from ``watermark_seed``, made symmetric under the training augmentations like the
    sensor pattern, and repeated."""
    n = WATERMARK_BLOCK
    basis = dct_basis(n)
    freqs = [(u, v) for u in range(n) for v in range(n) if u + v in WATERMARK_BAND]
    g = torch.Generator().manual_seed(s.watermark_seed)
    message = torch.randint(0, 2, (2, 2, len(freqs)), generator=g).double() * 2 - 1
    tile = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    for by in range(2):
        for bx in range(2):
            block = sum(
                m * basis[u][:, None] * basis[v][None, :]
                for m, (u, v) in zip(message[by, bx].tolist(), freqs, strict=True)
            )
            tile[by * n : (by + 1) * n, bx * n : (bx + 1) * n] = block
    tile = tile + tile.flip(0, 1)
    tile = tile + tile.T
    tile = ((tile - tile.mean()) / tile.std()).float()
    reps = math.ceil(s.size / (2 * n))
    return tile.repeat(reps, reps)[None, : s.size, : s.size]


def watermark(g: torch.Generator, img: torch.Tensor, s: DataSettings) -> torch.Tensor:
    """The whole images as a watermarking generator would leave them (plant() keeps the
    region): the pattern added, amplitude random; independent of the content and brightness."""
    amp = _uniform(g, (img.shape[0], 1, 1, 1), s.watermark_min, s.watermark_max)
    return img + amp * watermark_pattern(s)[None]


PLANTERS = {"upsampling": upsampling, "sensor-splice": sensor_splice, "watermark": watermark}


def make_batch(
    seed: int, split: str, index: int, batch_size: int, s: DataSettings, fake_share: float = 0.5
) -> Batch:
    """Batch ``index`` of ``split``: a fixed function of its arguments."""
    g = generator(seed, split, index)
    img = scenes(g, batch_size, s)
    n_fake = int(round(batch_size * fake_share))
    labels = torch.zeros(batch_size, dtype=torch.long)
    labels[:n_fake] = 1
    masks = torch.zeros(batch_size, s.size, s.size, dtype=torch.bool)
    if n_fake:
        planted, m = plant(g, img[:n_fake], s)
        img = torch.cat([planted, img[n_fake:]])
        masks[:n_fake] = m
    post = _uniform(g, (batch_size, 1, 1, 1), 0, s.post_noise_max)
    img = (img + post * torch.randn(img.shape, generator=g)).clamp(0, 1)
    img = (img * 255).round_() / 255  # stored as 8-bit images, like photographs
    perm = torch.randperm(batch_size, generator=g)
    return Batch(images=img[perm].contiguous(), labels=labels[perm], masks=masks[perm])


def make_set(
    seed: int, split: str, n: int, s: DataSettings, batch_size: int = 32, fake_share: float = 0.5
) -> Batch:
    """``n`` images of ``split`` (generated in batches of ``batch_size``)."""
    parts = [
        make_batch(seed, split, i, min(batch_size, n - i * batch_size), s, fake_share)
        for i in range(math.ceil(n / batch_size))
    ]
    return Batch(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.masks for p in parts]),
    )
