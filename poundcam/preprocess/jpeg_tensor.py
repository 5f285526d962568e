"""The transform's JPEG quality-90 re-encode and decode, computed as tensor math on the device.

A JPEG encoder followed by a decoder changes an image only in its lossy steps; the entropy
coding in between is lossless. ``jpeg_roundtrip_tensors(images)`` computes those steps directly, as
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

from .batching import map_in_groups
from .transform import JPEG_QUALITY

# The example tables of the JPEG standard (Annex K), row-major, as libjpeg's jcparam.c has them.
STD_LUMINANCE = (
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
)
STD_CHROMINANCE = (
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
    99,
)

_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


def quant_table(base: tuple[int, ...], quality: int = JPEG_QUALITY) -> torch.Tensor:
    """libjpeg's jpeg_set_quality(quality, force_baseline=TRUE) scaling of a base table: [8, 8]."""
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - quality * 2
    return torch.tensor([min(max((b * scale + 50) // 100, 1), 255) for b in base], dtype=torch.float32).view(
        8, 8
    )


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
    return (t0 * _C0_298 + z1 + z3, t1 * _C2_053 + z2 + z4, t2 * _C3_072 + z2 + z3, t3 * _C1_501 + z1 + z4)


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
    return ([t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3], [shift] * 8)


def _pass_matrix(one_pass, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass before its rounding is an integer linear map of 8 samples (a row or a column of
    a block): the 8x8 matrix ``a`` with outputs = a @ inputs (float64), and the shifts [8]."""
    cols, shifts = [], None
    for j in range(8):
        pre, shifts = one_pass([int(i == j) for i in range(8)], first)
        cols.append(pre)
    return (torch.tensor(cols, dtype=torch.float64).T.contiguous(), torch.tensor(shifts, dtype=torch.float64))


def _rounded_pass(
    one_pass, first: bool, input_offset: float = 0.0, output_offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pass with its rounding as ``floor(a @ x + bias)``: libjpeg's DESCALE,
    (x + 2**(n-1)) >> n, is floor(x * 2**-n + 1/2) (n = 0 keeps x), so each output's
    power-of-two scale goes into its row of the matrix and the half into its bias. Also folded
    in: a shift of the inputs (the -128 level shift) and of the outputs (the +128). Every
    product and partial sum is an integer times a power of two far below 2**53, so float64
    holds each step exactly, in any summation order."""
    a, shifts = _pass_matrix(one_pass, first)
    a = a * torch.exp2(-shifts).view(8, 1)
    bias = torch.where(shifts > 0, 0.5, 0.0) + input_offset * a.sum(1) + output_offset
    return a, bias


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
    recip_t, corr_t, shift_t = (torch.tensor(v, dtype=torch.int64).view(8, 8) for v in (recip, corr, shift))
    return recip_t, corr_t, shift_t


def _colour_matrices() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """libjpeg's fixed-point colour conversions as ``floor(m @ channels + bias)`` (float64,
    exact: 16-bit constants times 8-bit samples, scaled by 2**-16).
    rgb_ycc_convert: Y = (0.299 R + 0.587 G + 0.114 B + 1/2) >> 16, Cb and Cr with the centre
    128 and a rounding of 1/2 - 2**-16. ycc_rgb_convert: R = Y + ((1.402 (Cr-128) + 1/2) >> 16)
    and so on, where Y + floor(t) = floor(Y + t) since Y is an integer."""
    s = 2.0**-_SCALEBITS
    to_ycc = (
        torch.tensor(
            [
                [_fix(0.29900), _fix(0.58700), _fix(0.11400)],
                [-_fix(0.16874), -_fix(0.33126), _fix(0.5)],
                [_fix(0.5), -_fix(0.41869), -_fix(0.08131)],
            ],
            dtype=torch.float64,
        )
        * s
    )
    centre = ((128 << _SCALEBITS) + _ONE_HALF - 1) * s
    ycc_bias = torch.tensor([_ONE_HALF * s, centre, centre], dtype=torch.float64)
    cb_g, cr_g = _fix(0.34414), _fix(0.71414)
    to_rgb = (
        torch.tensor(
            [[1 / s, 0, _fix(1.40200)], [1 / s, -cb_g, -cr_g], [1 / s, _fix(1.77200), 0]], dtype=torch.float64
        )
        * s
    )
    rgb_bias = (
        torch.tensor(
            [
                _ONE_HALF - 128 * _fix(1.40200),
                _ONE_HALF + 128 * (cb_g + cr_g),
                _ONE_HALF - 128 * _fix(1.77200),
            ],
            dtype=torch.float64,
        )
        * s
    )
    return to_ycc, ycc_bias, to_rgb, rgb_bias


def _pad_edges(planes: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[..., H, W] (3 or 4 dims): the last row and column replicated up to multiples of
    ``rows`` and ``cols``."""
    h, w = planes.shape[-2:]
    ph, pw = -h % rows, -w % cols
    if ph == 0 and pw == 0:
        return planes
    return F.pad(planes, (0, pw, 0, ph), mode="replicate")


def _downsample_2x2(planes: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] (H, W even) -> [N, C, H/2, W/2]: libjpeg's h2v2_downsample, the mean of each
    2x2 square with a rounding bias alternating 1, 2, 1, 2, ... along each output row."""
    rows = planes[..., 0::2, :] + planes[..., 1::2, :]
    s = rows[..., 0::2] + rows[..., 1::2]
    bias = torch.arange(s.shape[-1], device=planes.device).remainder(2).add(1).to(s.dtype)
    return s.add_(bias).mul_(0.25).floor_()


def _upsample_fancy(planes: torch.Tensor, out: torch.Tensor) -> None:
    """[N, C, h, w] -> ``out`` [N, C, 2h, 2w] (or its top-left part): libjpeg's
    h2v2_fancy_upsample, a 3/4, 1/4 triangle filter in both directions with the edge rows and
    columns replicated: column sums 3 x a row + the row above (even output rows) or below (odd),
    then 3 x a column sum + its left (even output columns, + 8) or right neighbour (odd, + 7),
    >> 4. Integers below 2**12, computed in int16."""
    n, c, h, w = planes.shape
    p = F.pad(planes, (1, 1, 1, 1), mode="replicate").to(torch.int16)
    mid = p[:, :, 1:-1]
    sums = torch.stack(
        [torch.add(p[:, :, :-2], mid, alpha=3), torch.add(p[:, :, 2:], mid, alpha=3)], dim=3
    ).view(n, c, 2 * h, w + 2)
    mid = sums[..., 1:-1]
    up = torch.stack(
        [torch.add(sums[..., :-2], mid, alpha=3), torch.add(sums[..., 2:], mid, alpha=3)], dim=-1
    )
    up = up.add_(8 - torch.arange(2, dtype=torch.int16, device=planes.device))  # 8, 7
    up = up.bitwise_right_shift_(4).view(n, c, 2 * h, 2 * w)
    oh, ow = out.shape[-2:]
    out.copy_(up[..., :oh, :ow])


class RoundtripConstants(NamedTuple):
    """What the arithmetic needs besides the pixels, on the images' device (float64): the colour
    conversions as (matrix [3, 3], bias [3, 1]), and per component (luma, chroma) the four DCT
    passes as (matrix [8, 8], bias [8]) with the quantization between them: libjpeg-turbo's
    rounding correction and reciprocal factor and the table, each [8, 1, 8] (row, -, column of
    a block) to broadcast over planes seen as [.., H/8, 8, W/8, 8]."""

    to_ycc: tuple[torch.Tensor, torch.Tensor]
    to_rgb: tuple[torch.Tensor, torch.Tensor]
    luma: tuple
    chroma: tuple


@functools.lru_cache(maxsize=16)
def roundtrip_constants(quality: int = JPEG_QUALITY, device: str = "cpu") -> RoundtripConstants:
    def component(base):
        table = quant_table(base, quality).to(torch.float64)
        recip, corr, shift = (t.to(torch.float64) for t in _reciprocals(table))
        factor = recip * torch.exp2(-shift)  # exact: a power of two times an integer
        quant = tuple(t.view(8, 1, 8) for t in (corr, factor, table))
        passes = (
            *_rounded_pass(_fdct_pass, True, input_offset=-128.0),
            *_rounded_pass(_fdct_pass, False),
            *_rounded_pass(_idct_pass, True),
            *_rounded_pass(_idct_pass, False, output_offset=128.0),
        )
        return tuple(t.to(device) for t in (*passes[:4], *quant, *passes[4:]))

    to_ycc, ycc_bias, to_rgb, rgb_bias = (t.to(device) for t in _colour_matrices())
    return RoundtripConstants(
        (to_ycc, ycc_bias.view(3, 1)),
        (to_rgb, rgb_bias.view(3, 1)),
        component(STD_LUMINANCE),
        component(STD_CHROMINANCE),
    )


def _rows_pass(
    planes: torch.Tensor, a: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The pass along the rows of every block: [M, H, W] (contiguous, W a multiple of 8) seen
    as rows of 8 samples, one product for all of them, then the rounding."""
    flat = torch.addmm(bias, planes.view(-1, 8), a.T, out=None if out is None else out.view(-1, 8))
    return flat.floor_().view(planes.shape)


def _columns_pass(planes: torch.Tensor, a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The pass along the columns of every block: [M, H, W] (H a multiple of 8) seen as bands
    of 8 rows, the matrix applied to each band (a batched product), then the rounding."""
    m, h, w = planes.shape
    bands = torch.matmul(a, planes.view(m * h // 8, 8, w))
    return bands.add_(bias.view(8, 1)).floor_().view(m, h, w)


def _lossy(planes: torch.Tensor, stages, out: torch.Tensor | None = None) -> torch.Tensor:
    """[M, H, W] float64 samples 0..255 (H, W multiples of 8; contiguous) -> the decoder's
    samples (into ``out`` if given, [M, H, W] contiguous): islow forward DCT (rows, then
    columns; the level shift folded in), libjpeg-turbo's quantization by reciprocal, the
    dequantization, islow inverse DCT (columns, then rows; the +128 folded in), clamping to
    0..255. Planes stay in image layout: every block is its 8 rows and 8 columns in place."""
    a1, b1, a2, b2, corr, factor, table, a3, b3, a4, b4 = stages
    m, h, w = planes.shape
    x = _columns_pass(_rows_pass(planes, a1, b1), a2, b2)  # coefficients, scaled by 8 as libjpeg
    blocks = x.view(m, h // 8, 8, w // 8, 8)
    # sign(c) * floor((|c| + corr) * factor), as trunc((c + sign(c) * corr) * factor), then * Q
    blocks.addcmul_(torch.sign(blocks), corr).mul_(factor).trunc_().mul_(table)
    return _rows_pass(_columns_pass(x, a3, b3), a4, b4, out=out).clamp_(0, 255)


def lossy_roundtrip(rgb: torch.Tensor, consts: RoundtripConstants) -> torch.Tensor:
    """The arithmetic of ``jpeg_roundtrip_batch`` with its constants given. Whole planes of the
    batch go through each step at once (about 60 operations per call, whatever the batch); the
    planes are kept channel-first, [3, N, H, W], so that each is one contiguous tensor."""
    n, _, h, w = rgb.shape
    x = torch.empty((3, n, h, w), dtype=torch.float64, device=rgb.device)
    x.copy_(rgb.transpose(0, 1))
    to_ycc, ycc_bias = consts.to_ycc
    ycc = torch.addmm(ycc_bias, to_ycc, x.view(3, -1)).floor_().view(3, n, h, w)
    del x
    luma = _pad_edges(ycc[0], 8, 8).contiguous()
    hp, wp = luma.shape[-2:]
    # the decoded planes, luma padded to whole blocks: the inverse conversion reads all three
    planes = torch.empty((3, n, hp, wp), dtype=torch.float64, device=rgb.device)
    _lossy(luma, consts.luma, out=planes[0])
    del luma
    # chroma, as libjpeg: the rows to an even count and the columns to whole MCUs before the
    # 2x2 averaging, then the averaged rows (not the full-size ones) to whole blocks
    small = _pad_edges(_downsample_2x2(_pad_edges(ycc[1:], 2, 16)), 8, 8).contiguous()
    del ycc
    sh, sw = small.shape[-2:]
    decoded = _lossy(small.view(2 * n, sh, sw), consts.chroma).view(2, n, sh, sw)
    ch, cw = (h + 1) // 2, (w + 1) // 2  # the chroma planes' real size
    _upsample_fancy(decoded[..., :ch, :cw], planes[1:, :, :h, :w])
    if hp > h or wp > w:  # the padding of the chroma planes is never shown; keep it finite
        planes[1:, :, h:].zero_()
        planes[1:, :, :, w:].zero_()
    to_rgb, rgb_bias = consts.to_rgb
    out = torch.addmm(rgb_bias, to_rgb, planes.view(3, -1)).view(3, n, hp, wp)
    # clamped to 0..255, the float -> uint8 conversion truncates: the floor of the conversion
    out = out[..., :h, :w].clamp_(0, 255)
    return torch.empty((n, 3, h, w), dtype=torch.uint8, device=rgb.device).copy_(out.transpose(0, 1))


def jpeg_roundtrip_batch(rgb: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """uint8 [N, 3, H, W] RGB -> uint8 [N, 3, H, W]: the images after a 4:2:0 JPEG encode at
    ``quality`` and a decode, as Pillow (libjpeg-turbo) does them (see the module docstring)."""
    if rgb.dim() != 4 or rgb.shape[1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"expected uint8 [N, 3, H, W], got {rgb.dtype} {tuple(rgb.shape)}")
    return lossy_roundtrip(rgb, roundtrip_constants(quality, str(rgb.device)))


def jpeg_roundtrip_tensors(
    images: list[torch.Tensor], quality: int = JPEG_QUALITY, max_pixels: int | None = None
) -> list[torch.Tensor]:
    """uint8 [3, H, W] images (any sizes, one device) -> their JPEG round trips. Images of the
    same size go through ``jpeg_roundtrip_batch`` together, at most ``max_pixels`` at a time
    (its intermediates peak at about 60 bytes per pixel). Default: 8 Mpixels on the CPU
    (0.5 GB), 32 Mpixels on a GPU (2 GB), where each call's ~60 kernel launches are then
    shared by 16 1080p images."""
    if max_pixels is None:
        on_cpu = not images or images[0].device.type == "cpu"
        max_pixels = (8 if on_cpu else 32) * 1024 * 1024
    return map_in_groups(
        images,
        [im.shape for im in images],
        lambda stack, _: jpeg_roundtrip_batch(stack, quality),
        3 * max_pixels,
    )
