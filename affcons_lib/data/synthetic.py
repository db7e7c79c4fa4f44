"""Generated data for offline runs and tests, deterministic under a seed.

Both generators return ``(raw, labels)``: raw float32 in [0, 1], dense instance
labels uint32 (0 = background). They are stand-ins with the *structure* of the real
data, not its statistics: use the real volumes when you can.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["make_em_volume", "make_nuclei_image"]


def _check_shape(shape, ndim: int, minimum: int, name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or any(s < minimum for s in shape):
        raise ValueError(f"{name}: expected {ndim} sizes each >= {minimum}, got {shape}")
    return shape


def make_em_volume(
    shape=(32, 128, 128),
    *,
    n_neurites: int = 40,
    anisotropy: float = 4.0,
    membrane_width: int = 1,
    noise: float = 0.08,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like volume of densely packed, elongated neurites.

    Each neurite is a seed point drifting through the slices along a smooth random
    path (neurites run through many sections); every voxel belongs to the neurite
    nearest in an elliptical in-plane metric (elongated cross-sections), so the
    instances tile the volume like neuropil. Membranes between instances are dark
    and thin; intracellular texture, anisotropic blur (less in z, as in serial-
    section EM with thick sections) and noise follow.

    Parameters
    ----------
    shape : (Z, Y, X)
    n_neurites : int
    anisotropy : float
        Section thickness over in-plane pixel size; larger means paths move more
        between slices.
    membrane_width : int
        Membrane half-width in pixels.
    noise : float
        Standard deviation of additive Gaussian noise.
    seed : int

    Returns
    -------
    raw : ndarray of float32, shape (Z, Y, X), in [0, 1]
    labels : ndarray of uint32, shape (Z, Y, X), ids 1..n_neurites, no background
    """
    z, y, x = _check_shape(shape, 3, 4)
    if n_neurites < 2:
        raise ValueError(f"n_neurites: expected at least 2, got {n_neurites}")
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 1, (n_neurites, 2)) * (y, x)
    velocity = rng.normal(0, 0.6 * anisotropy, (n_neurites, 2))
    wiggle = rng.normal(0, 0.3 * anisotropy, (z, n_neurites, 2)).cumsum(0)
    t = np.arange(z)[:, None, None]
    paths = start[None] + velocity[None] * t + wiggle
    # Reflect at the borders so each neurite stays in view and moves smoothly.
    extent = np.array([y - 1, x - 1], dtype=float)
    paths = extent - np.abs(np.mod(paths, 2 * extent) - extent)
    # Elliptical metric per neurite: random elongation and orientation.
    angle = rng.uniform(0, np.pi, n_neurites)
    elong = rng.uniform(1.0, 2.5, n_neurites)
    scale = rng.uniform(0.7, 1.4, n_neurites)  # size variety
    cos, sin = np.cos(angle), np.sin(angle)
    yy, xx = np.mgrid[0:y, 0:x].astype(np.float32)
    labels = np.empty((z, y, x), dtype=np.uint32)
    for k in range(z):
        best = np.full((y, x), np.inf, dtype=np.float32)
        for n in range(n_neurites):
            dy, dx = yy - paths[k, n, 0], xx - paths[k, n, 1]
            u = (cos[n] * dx + sin[n] * dy) / elong[n]
            v = -sin[n] * dx + cos[n] * dy
            d = (u * u + v * v) / scale[n] ** 2
            closer = d < best
            best[closer] = d[closer]
            labels[k][closer] = n + 1
    size = (1, 2 * membrane_width + 1, 2 * membrane_width + 1)
    membrane = ndimage.maximum_filter(labels, size=size) != ndimage.minimum_filter(labels, size=size)
    brightness = rng.uniform(0.55, 0.85, n_neurites + 1).astype(np.float32)
    raw = brightness[labels]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (z, y, x)).astype(np.float32), (0.5, 2, 2))
    raw += 0.06 * texture / (texture.std() + 1e-6)
    raw[membrane] = 0.15
    raw = ndimage.gaussian_filter(raw, sigma=(0.3, 0.9, 0.9))
    raw += rng.normal(0, noise, raw.shape).astype(np.float32)
    return np.clip(raw, 0, 1).astype(np.float32), labels


def make_nuclei_image(
    shape=(256, 256),
    *,
    n_nuclei: int = 40,
    radius_range=(6.0, 18.0),
    noise: float = 0.03,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-nuclei-like image: bright, touching blobs of varied size on a
    dark background.

    Nuclei are ellipses of random size, elongation and orientation; where two
    overlap, each pixel goes to the nucleus whose (normalised) centre is nearer, so
    they touch along a clean border, as in BBBC039 / DSB2018.

    Parameters
    ----------
    shape : (Y, X)
    n_nuclei : int
    radius_range : (float, float)
        Range of the major semi-axis in pixels.
    noise : float
        Standard deviation of additive Gaussian noise.
    seed : int

    Returns
    -------
    raw : ndarray of float32, shape (Y, X), in [0, 1]
    labels : ndarray of uint32, shape (Y, X), 0 = background, ids consecutive
    """
    y, x = _check_shape(shape, 2, 8)
    lo, hi = radius_range
    if not 0 < lo <= hi:
        raise ValueError(f"radius_range: expected 0 < low <= high, got {radius_range}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:y, 0:x].astype(np.float32)
    best = np.full((y, x), np.inf, dtype=np.float32)
    labels = np.zeros((y, x), dtype=np.uint32)
    centres = rng.uniform(0, 1, (n_nuclei, 2)) * (y, x)
    radius = rng.uniform(lo, hi, n_nuclei)
    ratio = rng.uniform(0.6, 1.0, n_nuclei)
    angle = rng.uniform(0, np.pi, n_nuclei)
    for n in range(n_nuclei):
        dy, dx = yy - centres[n, 0], xx - centres[n, 1]
        u = (np.cos(angle[n]) * dx + np.sin(angle[n]) * dy) / radius[n]
        v = (-np.sin(angle[n]) * dx + np.cos(angle[n]) * dy) / (radius[n] * ratio[n])
        d = u * u + v * v
        inside = (d < 1.0) & (d < best)
        best[inside] = d[inside]
        labels[inside] = n + 1
    # Ids consecutive (a nucleus fully covered by others disappears).
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, dtype=np.uint32)
    lut[ids] = np.arange(len(ids), dtype=np.uint32)
    labels = lut[labels]
    intensity = np.concatenate([[0.08], rng.uniform(0.45, 0.95, len(ids))]).astype(np.float32)
    raw = intensity[labels]
    # Brighter centres, dimmer rims (chromatin), then optics blur and noise.
    raw = raw * np.where(labels > 0, 1.0 - 0.35 * np.clip(best, 0, 1), 1.0).astype(np.float32)
    raw = ndimage.gaussian_filter(raw, 1.2)
    raw += rng.normal(0, noise, raw.shape).astype(np.float32)
    return np.clip(raw, 0, 1).astype(np.float32), labels
