"""The transform's JPEG quality-90 re-encode and decode, computed as tensor math on the device.

A JPEG encoder followed by a decoder changes an image only in its lossy steps; the entropy
coding in between is lossless. ``jpeg_roundtrip(images)`` computes those steps directly, as
libjpeg-turbo (Pillow's codec) performs them for ``Image.save(format="JPEG", quality=90)`` and
``Image.open``, so no bitstream is written, copied to the host or parsed again:

  encoder: RGB -> YCbCr (libjpeg's fixed-point formulas) -> edge replication to whole blocks
           (chroma: to an even height and whole MCUs across, 2x2 averaging with libjpeg's
           alternating 1, 2 bias (4:2:0), then its last row down to whole blocks) -> 8x8 DCT
           -> division by the quality-90 tables;
  decoder: multiplication by the tables -> inverse DCT -> rounding and clamping to 0..255 ->
           libjpeg's "fancy" triangular 2x chroma upsampling (edges replicated) -> YCbCr -> RGB
           (its fixed-point tables).

Every step is libjpeg's integer arithmetic: the DCTs are its 13-bit fixed-point "islow"
butterflies (its default method for both directions; before each rounding shift a pass is an
integer 8x8 matrix, applied here in float64 where those integers are exact) and the
quantization its reciprocal multiplication, over all 8x8 blocks of the batch at once. On the
same pixels the result equals Pillow's bit for bit (tests/transform/test_jpeg_roundtrip.py).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .transform import JPEG_QUALITY

# The example tables of the JPEG standard (Annex K), row-major, as libjpeg's jcparam.c has them.
STD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
STD_CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99)

_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


def quant_table(base: tuple[int, ...], quality: int = JPEG_QUALITY) -> torch.Tensor:
    """libjpeg's jpeg_set_quality(quality, force_baseline=TRUE) scaling of a base table: [8, 8]."""
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - quality * 2
    return torch.tensor([min(max((b * scale + 50) // 100, 1), 255) for b in base],
                        dtype=torch.float32).view(8, 8)


# libjpeg's "islow" DCT: 13-bit fixed-point constants, 2 extra bits between the passes
_CONST_BITS, _PASS1_BITS = 13, 2
_C0_298, _C0_390, _C0_541, _C0_765 = 2446, 3196, 4433, 6270
_C0_899, _C1_175, _C1_501, _C1_847 = 7373, 9633, 12299, 15137
_C1_961, _C2_053, _C2_562, _C3_072 = 16069, 16819, 20995, 25172


def _odd_part(t0, t1, t2, t3):
    """The shared odd-part rotations of the islow DCTs (inputs in the inverse DCT's naming)."""
    z1, z2, z3, z4 = t0 + t3, t1 + t2, t0 + t2, t1 + t3
    z5 = (z3 + z4) * _C1_175
    z1, z2 = z1 * -_C0_899, z2 * -_C2_562
    z3, z4 = z3 * -_C1_961 + z5, z4 * -_C0_390 + z5
    return (t0 * _C0_298 + z1 + z3, t1 * _C2_053 + z2 + z4,
            t2 * _C3_072 + z2 + z3, t3 * _C1_501 + z1 + z4)


def _fdct_pass(d: list[int], first: bool) -> tuple[list[int], list[int]]:
    """One pass of jpeg_fdct_islow over 8 samples (a row in the first pass, a column in the
    second): the 8 outputs before libjpeg's final rounding shift, and those shifts. The second
    pass leaves the coefficients scaled by 8, as libjpeg does."""
    t0, t7 = d[0] + d[7], d[0] - d[7]
    t1, t6 = d[1] + d[6], d[1] - d[6]
    t2, t5 = d[2] + d[5], d[2] - d[5]
    t3, t4 = d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * _C0_541
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    if first:  # the DC and middle outputs are scaled up, not rounded
        even, shift = [(t10 + t11) << _PASS1_BITS, (t10 - t11) << _PASS1_BITS], 0
    else:
        even, shift = [t10 + t11, t10 - t11], _PASS1_BITS
    rest = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS
    pre = [even[0], o1, z1 + t13 * _C0_765, o3, even[1], o5, z1 - t12 * _C1_847, o7]
    return pre, [shift, rest, rest, rest, shift, rest, rest, rest]


def _idct_pass(c: list[int], first: bool) -> tuple[list[int], list[int]]:
    """One pass of jpeg_idct_islow over 8 values (a column of dequantized coefficients in the
    first pass, a row in the second): the outputs before the rounding shift, and the shifts.
    The second pass's outputs lack the +128 level shift."""
    z1 = (c[2] + c[6]) * _C0_541
    t2, t3 = z1 - c[6] * _C1_847, z1 + c[2] * _C0_765
    t0, t1 = (c[0] + c[4]) << _CONST_BITS, (c[0] - c[4]) << _CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
    shift = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS + 3
    return ([t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3],
            [shift] * 8)


def _pass_matrix(one_pass, first: bool, along_rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass before its rounding is an integer linear map of each row (or column) of a block:
    as a 64x64 matrix on row-major flattened blocks (float64, exact: every product and sum
    stays far below 2**53), transposed for ``flat @ m``; and the per-element shifts [64]."""
    cols, shifts = [], None
    for j in range(8):
        pre, shifts = one_pass([int(i == j) for i in range(8)], first)
        cols.append(pre)
    a = torch.tensor(cols, dtype=torch.float64).T.contiguous()  # pre = a @ samples
    eye = torch.eye(8, dtype=torch.float64)
    shifts = torch.tensor(shifts, dtype=torch.float64)
    if along_rows:  # element (r, c) <- row r
        return torch.kron(eye, a).T.contiguous(), shifts.repeat(8)
    return torch.kron(a, eye).T.contiguous(), shifts.repeat_interleave(8)


def _rounding(shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's DESCALE, (x + 2**(n-1)) >> n, as floor(x * 2**-n + offset) on exact integers
    (n = 0 keeps x): the (scale, offset) vectors for torch.addcmul."""
    scale = torch.exp2(-shifts)
    return scale, torch.where(shifts > 0, torch.full_like(shifts, 0.5), torch.zeros_like(shifts))


# (matrix, scale, offset) of the four passes, in the order libjpeg runs them
_PASSES = [(m, *_rounding(sh)) for m, sh in (
    _pass_matrix(_fdct_pass, True, along_rows=True),
    _pass_matrix(_fdct_pass, False, along_rows=False),
    _pass_matrix(_idct_pass, True, along_rows=False),
    _pass_matrix(_idct_pass, False, along_rows=True))]


def _apply_pass(flat: torch.Tensor, m: torch.Tensor, scale: torch.Tensor,
                offset: torch.Tensor) -> torch.Tensor:
    return (flat @ m).mul_(scale).add_(offset).floor_()  # exact: scale is a power of two


def _reciprocals(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """libjpeg-turbo's quantization by reciprocal (jcdctmgr.c compute_reciprocal) for the
    islow divisors 8 x Q: |level| = ((|coef| + corr) * recip) >> shift."""
    recip, corr, shift = [], [], []
    for q in table.flatten().tolist():
        divisor = int(q) << 3
        r = 16 + divisor.bit_length() - 1
        fq, fr = divmod(1 << r, divisor)
        c = divisor // 2
        if fr == 0:
            fq >>= 1
            r -= 1
        elif fr <= divisor // 2:
            c += 1
        else:
            fq += 1
        recip.append(fq)
        corr.append(c)
        shift.append(r)
    return tuple(torch.tensor(v, dtype=torch.int64).view(8, 8) for v in (recip, corr, shift))


def _rgb_to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """int32 [N, 3, H, W] RGB -> int32 YCbCr, as libjpeg's rgb_ycc_convert."""
    r, g, b = rgb.unbind(1)
    y = (_fix(0.29900) * r + _fix(0.58700) * g + _fix(0.11400) * b + _ONE_HALF) >> _SCALEBITS
    offset = (128 << _SCALEBITS) + _ONE_HALF - 1
    cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + offset) >> _SCALEBITS
    cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + offset) >> _SCALEBITS
    return torch.stack([y, cb, cr], 1)


def _ycc_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """int32 planes -> uint8 [N, 3, H, W] RGB, as libjpeg's ycc_rgb_convert (range-limited)."""
    cb, cr = cb - 128, cr - 128
    r = y + ((_fix(1.40200) * cr + _ONE_HALF) >> _SCALEBITS)
    g = y + ((-_fix(0.34414) * cb + _ONE_HALF - _fix(0.71414) * cr) >> _SCALEBITS)
    b = y + ((_fix(1.77200) * cb + _ONE_HALF) >> _SCALEBITS)
    return torch.stack([r, g, b], 1).clamp_(0, 255).to(torch.uint8)


def _downsample_2x2(plane: torch.Tensor) -> torch.Tensor:
    """[N, H, W] (H, W even) -> [N, H/2, W/2]: libjpeg's h2v2_downsample, whose rounding bias
    alternates 1, 2, 1, 2, ... along each output row."""
    n, h, w = plane.shape
    s = plane.view(n, h // 2, 2, w // 2, 2).sum(dim=(2, 4))
    bias = torch.arange(w // 2, device=plane.device).remainder(2).add(1).to(plane.dtype)
    return (s + bias) >> 2


def _upsample_fancy(plane: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """[N, h, w] -> [N, out_h, out_w]: libjpeg's h2v2_fancy_upsample (3/4, 1/4 triangle filter
    in both directions, rounding biases 8 and 7, the edge rows and columns replicated)."""
    # vertical: each input row makes two column sums, 3 x itself + the row above / below
    up = torch.cat([plane[:, :1], plane[:, :-1]], 1)
    down = torch.cat([plane[:, 1:], plane[:, -1:]], 1)
    sums = torch.stack([3 * plane + up, 3 * plane + down], 2).flatten(1, 2)  # [N, 2h, w]
    left = torch.cat([sums[..., :1], sums[..., :-1]], -1)
    right = torch.cat([sums[..., 1:], sums[..., -1:]], -1)
    # at the first and last column the neighbour is the column itself: 4 x its sum
    even = (3 * sums + left + 8) >> 4
    odd = (3 * sums + right + 7) >> 4
    out = torch.stack([even, odd], -1).flatten(-2)  # [N, 2h, 2w]
    return out[:, :out_h, :out_w]


def _pad_edges(plane: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Replicate the last row and column up to multiples of ``rows`` and ``cols``."""
    h, w = plane.shape[-2:]
    ph, pw = -h % rows, -w % cols  # padded even when zero: no branch on sizes when traced
    padded = F.pad(plane.unsqueeze(1).float(), (0, pw, 0, ph), mode="replicate")  # exact: <= 255
    return padded.squeeze(1).to(plane.dtype)


class RoundtripConstants(NamedTuple):
    """What the arithmetic needs besides the pixels, on the images' device (float64): the four
    DCT passes as (matrix, scale, offset), and per component (luma, chroma) the flattened
    quantization table with libjpeg-turbo's reciprocal factor and rounding correction."""

    passes: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    luma: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    chroma: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=16)
def roundtrip_constants(quality: int = JPEG_QUALITY, device: str = "cpu") -> RoundtripConstants:
    def component(base):
        table = quant_table(base, quality)
        recip, corr, shift = (t.to(torch.float64).flatten() for t in _reciprocals(table))
        factor = recip * torch.exp2(-shift)  # exact: a power of two times an integer
        return tuple(t.to(device) for t in (table.flatten().to(torch.float64), factor, corr))

    passes = tuple(tuple(t.to(device) for t in p) for p in _PASSES)
    return RoundtripConstants(passes, component(STD_LUMINANCE), component(STD_CHROMINANCE))


def _lossy(plane: torch.Tensor, passes, table) -> torch.Tensor:
    """[N, H, W] samples (H, W multiples of 8) -> the decoder's samples: islow forward DCT,
    quantization, dequantization, islow inverse DCT, level shift and clamping. Integers held
    in float64, so every step is exact; each DCT pass is one product and one rounding."""
    n, h, w = plane.shape
    fdct_rows, fdct_cols, idct_cols, idct_rows = passes
    q, factor, corr = table
    flat = plane.view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 64)
    flat = flat.to(torch.float64).sub_(128)
    coef = _apply_pass(_apply_pass(flat, *fdct_rows), *fdct_cols)
    del flat
    x = coef.abs().add_(corr).mul_(factor).floor_()  # libjpeg-turbo's reciprocal division
    x = torch.copysign(x, coef, out=x).mul_(q)  # dequantized
    del coef
    x = _apply_pass(_apply_pass(x, *idct_cols), *idct_rows)
    x = x.add_(128).clamp_(0, 255).to(torch.int32)
    return x.view(n, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, h, w)


def lossy_roundtrip(rgb: torch.Tensor, consts: RoundtripConstants) -> torch.Tensor:
    """The arithmetic of ``jpeg_roundtrip_batch`` with its constants given: plain tensor code
    with no branch on sizes or values, so torch.compile traces it as one graph (with dynamic
    shapes it still recompiles for some size classes: padding or none, square or not)."""
    n, _, h, w = rgb.shape
    ycc = _rgb_to_ycc(rgb.to(torch.int32))
    y = _lossy(_pad_edges(ycc[:, 0], 16, 16), consts.passes, consts.luma)[:, :h, :w]
    ch, cw = (h + 1) // 2, (w + 1) // 2  # the chroma planes' real size
    chroma = []
    for c in (1, 2):
        # as libjpeg: the rows to an even count and the columns to whole MCUs before the 2x2
        # averaging, then the averaged rows (not the full-size ones) to whole blocks
        small = _downsample_2x2(_pad_edges(ycc[:, c], 2, 16))
        small = _lossy(_pad_edges(small, 8, 8), consts.passes, consts.chroma)[:, :ch, :cw]
        chroma.append(_upsample_fancy(small, h, w))
    return _ycc_to_rgb(y, *chroma)


def jpeg_roundtrip_batch(rgb: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """uint8 [N, 3, H, W] RGB -> uint8 [N, 3, H, W]: the images after a 4:2:0 JPEG encode at
    ``quality`` and a decode, as Pillow (libjpeg-turbo) does them (see the module docstring)."""
    if rgb.dim() != 4 or rgb.shape[1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"expected uint8 [N, 3, H, W], got {rgb.dtype} {tuple(rgb.shape)}")
    return lossy_roundtrip(rgb, roundtrip_constants(quality, str(rgb.device)))


def jpeg_roundtrip(images: list[torch.Tensor], quality: int = JPEG_QUALITY,
                   max_pixels: int = 8 * 1024 * 1024) -> list[torch.Tensor]:
    """uint8 [3, H, W] images (any sizes, one device) -> their JPEG round trips. Images of the
    same size go through ``jpeg_roundtrip_batch`` together, at most ``max_pixels`` at a time
    (its intermediates peak at about 100 bytes per pixel: 0.8 GiB for the default)."""
    out: list[torch.Tensor | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
    for (h, w), idx in by_size.items():
        step = max(1, max_pixels // max(h * w, 1))
        for k in range(0, len(idx), step):
            chunk = idx[k:k + step]
            done = jpeg_roundtrip_batch(torch.stack([images[i] for i in chunk]), quality)
            for i, im in zip(chunk, done):
                out[i] = im
    return out  # type: ignore[return-value]
