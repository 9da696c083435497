"""A synthetic 3D segmentation task for the space-time study: bright blobs in noise.

Each volume holds a few spheres (random centres and radii) whose voxels are 1 in the mask; the image
is contrast * mask, blurred by one 3x3x3 box average (soft edges), plus Gaussian noise. A network has to
look at a neighbourhood to tell a blob voxel from a noisy background voxel, which is what the
convolutions' halos carry across the sub-volumes. Batches come from (seed, step), so every process of a
decomposition draws the same volumes and slices its own block.
"""
from __future__ import annotations

import numpy as np


def _box_blur(v: np.ndarray) -> np.ndarray:
    padded = np.pad(v, 1, mode="edge")
    d, h, w = v.shape
    return sum(padded[i:i + d, j:j + h, k:k + w] for i in range(3) for j in range(3) for k in range(3)) / 27.0


def blobs(seed: int, step: int, batch: int, shape, blobs_per_volume: int = 3, noise: float = 0.5,
          contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks), each (batch, D, H, W, 1) float32; the masks are 0/1."""
    if batch < 1 or min(shape) < 2:
        raise ValueError(f"blobs: batch {batch} and volume {tuple(shape)} must be positive, sides >= 2")
    rng = np.random.default_rng([seed, step])
    grid = np.stack(np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij"), axis=-1)
    images, masks = [], []
    for _ in range(batch):
        mask = np.zeros(shape, bool)
        for _ in range(blobs_per_volume):
            centre = rng.uniform(0, 1, 3) * np.asarray(shape)
            radius = rng.uniform(0.15, 0.3) * min(shape)
            mask |= np.sum(((grid - centre) / radius) ** 2, axis=-1) <= 1.0
        image = contrast * _box_blur(mask.astype(np.float64)) + noise * rng.normal(size=shape)
        images.append(image)
        masks.append(mask)
    return (np.asarray(images, np.float32)[..., None], np.asarray(masks, np.float32)[..., None])
