"""Image operations shared by the corruptions: filters, shifts, zooms, resizing, fractal noise.

All work on (N, C, H, W) tensors, vectorised over the batch, on the images' device.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def pad2d(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    """Pad H by ``ph`` and W by ``pw`` on both sides; ``reflect`` (OpenCV's REFLECT_101) falls back to
    ``replicate`` where the image is too small to reflect."""
    if mode == "reflect" and (ph >= x.shape[2] or pw >= x.shape[3]):
        mode = "replicate"
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


def depthwise(x: Tensor, kernel: Tensor, mode: str = "reflect") -> Tensor:
    """Correlate every channel with the 2-D ``kernel`` (odd sizes), output the input's size."""
    kh, kw = kernel.shape
    c = x.shape[1]
    k = kernel.to(x.device, x.dtype).expand(c, 1, kh, kw)
    return F.conv2d(pad2d(x, kh // 2, kw // 2, mode), k, groups=c)


def gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Sampled, normalised Gaussian on -radius..radius (a delta for sigma <= 0)."""
    t = torch.arange(-radius, radius + 1, dtype=dtype)
    if sigma <= 0:
        return (t == 0).to(dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_filter(x: Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> Tensor:
    """Separable Gaussian blur with scipy's support ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x
    k = gaussian_kernel1d(sigma, radius)
    y = depthwise(x, k.view(1, -1), mode)
    return depthwise(y, k.view(-1, 1), mode)


def pixel_grid(n: int, h: int, w: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    """Pixel coordinates (N, H, W) of every output pixel: column ``u`` and row ``v``."""
    v, u = torch.meshgrid(torch.arange(h, dtype=like.dtype, device=like.device),
                          torch.arange(w, dtype=like.dtype, device=like.device), indexing="ij")
    return u.expand(n, h, w), v.expand(n, h, w)


def sample_at(x: Tensor, u: Tensor, v: Tensor, padding: str = "border") -> Tensor:
    """Bilinear samples of ``x`` at pixel coordinates ``u`` (column) and ``v`` (row), each (N, H, W).

    ``padding``: ``border`` (replicate) or ``reflection`` (about the border pixels, REFLECT_101).
    """
    h, w = x.shape[2], x.shape[3]
    grid = torch.stack((2 * u / max(w - 1, 1) - 1, 2 * v / max(h - 1, 1) - 1), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=True)


def shifted(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """``out[p] = x[p + (dx, dy)]`` per image (``dx``, ``dy``: (N,) pixels), bilinear, edges replicated."""
    u, v = pixel_grid(x.shape[0], x.shape[2], x.shape[3], x)
    return sample_at(x, u + dx.view(-1, 1, 1), v + dy.view(-1, 1, 1))


def motion_blur(x: Tensor, radius: float, sigma: float, angle_deg: Tensor, scale: float) -> Tensor:
    """ImageMagick-style motion blur: a one-sided line kernel of ``2 * ceil(radius) + 1`` taps with
    half-Gaussian weights ``exp(-i^2 / (2 sigma^2))``, tap ``i`` read ``i * scale`` pixels away along
    ``angle_deg`` (per image, (N,)). Deviation: taps are read bilinearly (ImageMagick rounds to pixels).
    """
    taps = 2 * math.ceil(radius) + 1
    i = torch.arange(taps, dtype=torch.float64)
    weights = torch.exp(-i ** 2 / (2.0 * sigma ** 2))
    weights = (weights / weights.sum()).tolist()
    a = torch.deg2rad(angle_deg.to(x.dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    out = torch.zeros_like(x)
    for k, wk in enumerate(weights):
        if wk < 1e-12:
            continue
        out = out + wk * (x if k == 0 else shifted(x, k * scale * cos, k * scale * sin))
    return out


def zoom_center(x: Tensor, factor: float) -> Tensor:
    """Magnify about the image centre by ``factor`` >= 1 and keep the central H x W (bilinear)."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def box_weights(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) resampling matrix of Pillow's BOX filter: the mean of the input pixels whose
    centres fall in the output pixel's footprint (nearest neighbour when enlarging)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    pix = torch.arange(n_in, dtype=torch.float64) + 0.5
    t = pix.view(1, -1) - centre.view(-1, 1)
    w = ((t > -support) & (t <= support)).to(torch.float64)
    return w / w.sum(1, keepdim=True)


def box_resize(x: Tensor, h: int, w: int) -> Tensor:
    """Resize (N, C, H, W) to (N, C, h, w) with :func:`box_weights` along both axes."""
    wh = box_weights(x.shape[2], h).to(x.device, x.dtype)
    ww = box_weights(x.shape[3], w).to(x.device, x.dtype)
    return torch.einsum("ah,nchw,bw->ncab", wh, x, ww)


def plasma_fractal(n: int, size: int, decay: float, gen: torch.Generator) -> Tensor:
    """(n, size, size) diamond-square height maps in [0, 1] on a torus, ``size`` a power of two.

    As in the CIFAR-10-C fog: the perturbation starts at ``100 * U(-100, 100)`` and is divided
    by ``decay`` at every halving of the step.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal: size must be a power of two >= 2, got {size}")
    m = torch.zeros(n, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(a: Tensor) -> Tensor:
        return a / 4 + wibble * (2 * torch.rand(a.shape, generator=gen, dtype=torch.float64) - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        acc = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = wibbled(acc + acc.roll(-1, 2))
        centres, corners = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    lo = m.amin((1, 2), keepdim=True)
    m = m - lo
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)


def fractal_layer(x: Tensor, decay: float, gen: torch.Generator) -> Tensor:
    """(N, 1, H, W) plasma fractal for images ``x``, generated at the next power of two >= max(H, W)."""
    h, w = x.shape[2], x.shape[3]
    size = max(2, 1 << (max(h, w) - 1).bit_length())
    return plasma_fractal(x.shape[0], size, decay, gen)[:, None, :h, :w].to(x.device, x.dtype)
