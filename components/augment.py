"""Training augmentations in two halves, `draw` (a view's random parameters) and `apply` (the view), so that a pool of
views can be drawn once and a teacher's outputs on them cached (components.kd.views)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Augmentation:
    """A training augmentation in two halves: `draw(n, gen)` the random parameters of n samples' views (an (n, P)
    integer tensor), `apply(x, params)` the views themselves; calling it draws and applies. The halves let a pool
    of views be drawn once and its teacher outputs cached (components.kd.views)."""

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def key(self) -> str:
        """What the views depend on besides the data and the seed (part of a cache key)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(len(x), gen))


class Views(NamedTuple):
    """A pool of `count` augmentation draws per training sample: `params[v, i]` is view v of sample i."""

    augmentation: Augmentation
    params: torch.Tensor  # (count, n, P)

    @property
    def count(self) -> int:
        return self.params.shape[0]


class ShiftFlip(Augmentation):
    """Images: each shifted independently by up to `max_shift` pixels (zero padding); with `flip`, a random half
    mirrored left to right (natural photos: CIFAR-10's standard augmentation with `max_shift` 4). Params per
    sample: (dy, dx, mirror)."""

    def __init__(self, max_shift: int = 1, flip: bool = False):
        self.max_shift, self.flip = max_shift, flip

    def key(self) -> str:
        return f"shift_flip(max_shift={self.max_shift},flip={self.flip})"

    def draw(self, n, gen):
        p = self.max_shift
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        mirror = (torch.rand(n, generator=gen) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        return torch.stack([dy, dx, mirror.long()], dim=1)

    def apply(self, x, params):
        n, c, h, w = x.shape
        p = self.max_shift
        xp = F.pad(x, (p, p, p, p))
        dy, dx, mirror = params[:, 0], params[:, 1], params[:, 2].bool()
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
        out = xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
        return torch.where(mirror[:, None, None, None], out.flip(-1), out)


def shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1, flip: bool = False) -> torch.Tensor:
    """ShiftFlip(max_shift, flip) drawn and applied once."""
    return ShiftFlip(max_shift, flip)(x, gen)
