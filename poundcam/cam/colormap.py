"""The colour ramp of the evidence overlays: one source for the renderer (poundcam.cam.render)
and for the report's colour legend, without numpy or PyTorch.

A perceptual blue-cyan-yellow-red ramp (turbo-like): ``(position, red, green, blue)`` control
points in 0..1, interpolated linearly. An overlay's pixel is
``image * (1 - a) + ramp(v) * a`` with ``a = OVERLAY_ALPHA * v``, where ``v`` is the map value
divided by the larger of the image's two map maxima (the shared scale).
"""

from __future__ import annotations

RAMP = (
    (0.00, 0.19, 0.07, 0.23),
    (0.13, 0.27, 0.36, 0.85),
    (0.25, 0.16, 0.65, 0.98),
    (0.38, 0.10, 0.88, 0.73),
    (0.50, 0.45, 0.98, 0.36),
    (0.63, 0.80, 0.92, 0.20),
    (0.75, 0.99, 0.70, 0.16),
    (0.88, 0.93, 0.36, 0.07),
    (1.00, 0.48, 0.02, 0.01),
)
OVERLAY_ALPHA = 0.6


def css_gradient(direction: str = "to right") -> str:
    """The ramp as a CSS ``linear-gradient`` (the legend draws exactly these stops)."""
    stops = ", ".join(
        f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)}) {p * 100:g}%" for p, r, g, b in RAMP
    )
    return f"linear-gradient({direction}, {stops})"
