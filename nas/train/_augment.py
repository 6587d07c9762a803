"""Batched, on-device augmentation: uint8 image batches, and token-id batches (word dropout).

Every function takes a whole batch (images ``(N, C, H, W)``, token ids ``(N, L)``) and
draws its randomness from an explicit :class:`torch.Generator`, never from the global RNG,
so a trainer seeded once replays the same augmentations. There is no per-sample Python:
each transform is a handful of tensor ops whatever the batch size.

Randomness is drawn on the generator's device and moved to the batch's device, so a CPU
generator can drive a CUDA batch (the draws are a few ints per image; the transfer is
negligible) and the stream of draws does not depend on where the data lives.

The choices follow airbench (github.com/KellerJordan/cifar10-airbench), the fastest known
small-image trainer: random translation by up to ``pad`` pixels implemented as a crop of a
reflect-padded image, random horizontal flips, and the padding done once for the whole
dataset rather than per batch (see :func:`pad`, :func:`crop_padded`). Cutout (DeVries &
Taylor, 2017) is optional and off by default; airbench does without it. Text gets word
dropout (:func:`drop_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import NasError

PadMode = Literal["reflect", "zeros"]


class AugmentError(NasError):
    """An augmentation setting that cannot apply (negative padding, cutout too large, ...)."""


@dataclass(frozen=True)
class AugmentConfig:
    """What to do to each training batch.

    Attributes:
        crop_pad: translate by up to this many pixels each way (0 disables the crop).
        pad_mode: ``reflect`` (airbench's choice: no artificial black border) or ``zeros``.
        flip: random horizontal flips; callers AND this with the dataset's own ``flip``
            flag (digits and text-like images must not be mirrored).
        cutout: side of a square zeroed at a random centre (0 disables).
    """

    crop_pad: int = 2
    pad_mode: PadMode = "reflect"
    flip: bool = True
    cutout: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.crop_pad, int) or self.crop_pad < 0:
            raise AugmentError(f"crop_pad must be an integer >= 0, got {self.crop_pad!r}")
        if self.pad_mode not in ("reflect", "zeros"):
            raise AugmentError(f"pad_mode must be 'reflect' or 'zeros', got {self.pad_mode!r}")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise AugmentError(f"cutout must be an integer >= 0, got {self.cutout!r}")


def _check_batch(x: Tensor) -> None:
    if x.dim() == 2 and not x.is_floating_point():
        # Text batches (nas.data) hold token ids; the trainer passes them by untouched.
        raise AugmentError(
            f"got token ids of shape {tuple(x.shape)}: augmentation and normalisation apply "
            f"to image batches (N, C, H, W) only"
        )
    if x.dim() != 4:
        raise AugmentError(f"expected a batch shaped (N, C, H, W), got shape {tuple(x.shape)}")


def _randint(
    high: int, size: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> Tensor:
    """Integers in [0, high) drawn on the generator's device, delivered on ``device``."""
    draws = torch.randint(0, high, size, generator=generator, device=generator.device)
    return draws.to(device, non_blocking=True)


def pad(x: Tensor, amount: int, mode: PadMode = "reflect") -> Tensor:
    """Pad H and W by ``amount`` on every side (the once-per-dataset half of a random crop).

    Reflect padding needs ``amount`` smaller than H and W; for tiny images where it is not,
    zeros are the only sensible choice and the caller must ask for them.
    """
    _check_batch(x)
    if amount == 0:
        return x
    if mode == "reflect":
        if amount >= min(x.shape[-2:]):
            raise AugmentError(
                f"reflect padding of {amount} needs images larger than that, got {tuple(x.shape)}"
            )
        return F.pad(x, (amount,) * 4, mode="reflect")
    return F.pad(x, (amount,) * 4, mode="constant", value=0)


def crop_padded(x_padded: Tensor, amount: int, generator: torch.Generator) -> Tensor:
    """Random (H, W) crops of a batch padded by ``amount``: a random translation.

    One ``gather`` over flattened pixel indices does the whole batch: on a CPU it does less
    work than airbench's per-shift masked copies or 4-D advanced indexing.
    """
    _check_batch(x_padded)
    if amount == 0:
        return x_padded
    n, c, hp, wp = x_padded.shape
    h, w = hp - 2 * amount, wp - 2 * amount
    device = x_padded.device
    shifts = _randint(2 * amount + 1, (n, 2), generator, device)
    rows = torch.arange(h, device=device)[None, :] + shifts[:, 0:1]  # (n, h)
    cols = torch.arange(w, device=device)[None, :] + shifts[:, 1:2]  # (n, w)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w)
    out = x_padded.reshape(n, c, hp * wp).gather(2, flat.expand(n, c, h * w))
    return out.view(n, c, h, w)


def random_crop(
    x: Tensor, amount: int, generator: torch.Generator, mode: PadMode = "reflect"
) -> Tensor:
    """Pad by ``amount`` then crop back to the input size at a random offset per image."""
    return crop_padded(pad(x, amount, mode), amount, generator)


def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    _check_batch(x)
    u = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device)
    return torch.where((u < p).view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(x: Tensor, size: int, generator: torch.Generator, value: float = 0) -> Tensor:
    """Set a ``size``x``size`` square at a random centre of each image to ``value``.

    The centre may lie anywhere in the image, so the square may be clipped by the border,
    as in the original paper; on uint8 images the default 0 is black.
    """
    _check_batch(x)
    if size == 0:
        return x
    n, _, h, w = x.shape
    if size > min(h, w):
        raise AugmentError(f"cutout size {size} exceeds the image size {h}x{w}")
    device = x.device
    cy = _randint(h, (n, 1, 1), generator, device)
    cx = _randint(w, (n, 1, 1), generator, device)
    top, left = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)  # (n, h, w)
    return x.masked_fill(inside[:, None], value)


def augment_padded(x_padded: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Crop, flip and cutout a batch already padded by ``config.crop_pad`` (see :func:`pad`).

    The order of the draws is fixed (crop, flip, cutout) so a seed replays exactly.
    """
    x = crop_padded(x_padded, config.crop_pad, generator)
    if config.flip:
        x = random_flip(x, generator)
    if config.cutout:
        x = cutout(x, config.cutout, generator)
    return x


def drop_tokens(ids: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Word dropout (Iyyer et al., 2015): each token of a ``(N, L)`` batch of ids becomes
    padding (id 0, which the layers' mask skips) with probability ``p``. A text that would
    lose every token keeps its first, so each still has a word to pool."""
    if ids.dim() != 2 or ids.is_floating_point():
        raise AugmentError(f"expected token ids shaped (N, L), got {ids.dtype} {tuple(ids.shape)}")
    if not 0 <= p < 1:
        raise AugmentError(f"token dropout must be in [0, 1), got {p!r}")
    if p == 0:
        return ids
    real = ids != 0
    u = torch.rand(ids.shape, generator=generator, device=generator.device).to(ids.device)
    drop = (u < p) & real
    emptied = ~(real & ~drop).any(dim=1)
    drop[:, 0] &= ~emptied
    return ids.masked_fill(drop, 0)


def normalize(
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 pixels (0..255) to ``(x / 255 - mean) / std`` per channel, as ``dtype``.

    ``mean`` and ``std`` are on the 0..1 scale (torchvision's convention). The affine map is
    folded into one multiply and one subtract on a fresh float tensor.
    """
    _check_batch(x)
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise AugmentError(f"mean/std need {c} channel values, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise AugmentError(f"std must be positive, got {tuple(std)}")
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    shift = mean_t / std_t
    out = x.to(torch.float32).mul_(scale).sub_(shift)
    return out if dtype == torch.float32 else out.to(dtype)
