"""One level of M3D-NCA: the update rule applied to every cell.

State layout (B, C, X, Y, Z): image channels first, then output (logit) channels,
then hidden channels, as the reference implementation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import depthwise_conv3d
from .firing import fire_mask

BATCHNORM_EPS = 1e-5


class NCARule(nn.Module):
    """Perceive (depthwise k^3 conv + identity), dense to h, BatchNorm, ReLU, dense to c."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, input_channels: int):
        super().__init__()
        self.channels = channels
        self.input_channels = input_channels
        self.kernel_size = kernel_size
        self.perception = nn.Conv3d(channels, channels, kernel_size, groups=channels)
        self.fc0 = nn.Linear(2 * channels, hidden)
        self.norm = nn.BatchNorm3d(hidden, track_running_stats=False)
        self.fc1 = nn.Linear(hidden, channels, bias=False)
        with torch.no_grad():
            self.fc1.weight.zero_()

    def perceive(self, state: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, 2C, X, Y, Z): own state, then the learnt filter."""
        pad = self.kernel_size // 2
        padded = F.pad(state, (pad,) * 6, mode="reflect") if pad else state
        filtered = depthwise_conv3d(padded, self.perception.weight, self.perception.bias)
        return torch.cat([state, filtered], dim=1)

    def delta_reference(self, state: torch.Tensor, per_sample: bool,
                        valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The proposed update (B, C, V), computed literally: dense, BatchNorm, ReLU, dense.

        BatchNorm uses batch statistics (the reference never tracks running stats);
        ``per_sample`` takes each batch element's own statistics, which is what separate
        runs of batch size 1 give (pseudo-ensemble inference). ``valid`` (B, 1, V), with
        ``per_sample``, restricts each element's statistics to its cells where it is 1
        (a case zero-padded into a batch of larger ones).
        """
        batch = state.shape[0]
        perceived = self.perceive(state).reshape(batch, 2 * self.channels, -1)
        hidden = torch.matmul(self.fc0.weight, perceived) + self.fc0.bias[None, :, None]
        if valid is not None:
            _require_per_sample(per_sample)
            moments = [torch.var_mean(h[:, m[0] > 0], dim=1, unbiased=False, keepdim=True)
                       for h, m in zip(hidden, valid)]
            var = torch.stack([v for v, _ in moments])
            mean = torch.stack([m for _, m in moments])
        else:
            dims = (2,) if per_sample else (0, 2)
            var, mean = torch.var_mean(hidden, dim=dims, unbiased=False, keepdim=True)
        scale = self.norm.weight[None, :, None] * torch.rsqrt(var + BATCHNORM_EPS)
        hidden = F.relu((hidden - mean) * scale + self.norm.bias[None, :, None])
        return torch.matmul(self.fc1.weight, hidden)

    def delta(self, state: torch.Tensor, per_sample: bool, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The same update as ``delta_reference``, with BatchNorm folded into fc0.

        The hidden layer's mean and variance follow from the perception's mean and
        covariance (2c x 2c), so the normalised layer is one matmul with scaled weights
        applied to the centred perception; fc0's bias cancels under BatchNorm.
        """
        batch = state.shape[0]
        perceived = self.perceive(state).reshape(batch, 2 * self.channels, -1)
        if valid is not None:
            _require_per_sample(per_sample)
            count = valid.sum(dim=2, keepdim=True)
            mean = (perceived * valid).sum(dim=2, keepdim=True) / count
            centred = perceived - mean
            cov = torch.bmm(centred * valid, centred.transpose(1, 2)) / count
        else:
            if per_sample:
                mean = perceived.mean(dim=2, keepdim=True)
            else:
                mean = perceived.mean(dim=(0, 2), keepdim=True)
            centred = perceived - mean
            cov = torch.bmm(centred, centred.transpose(1, 2)) / centred.shape[2]
        if not per_sample:
            cov = cov.mean(dim=0, keepdim=True)
        weight = self.fc0.weight
        var = torch.einsum("bij,hi,hj->bh", cov, weight, weight)
        scale = self.norm.weight[None, :] * torch.rsqrt(var + BATCHNORM_EPS)
        folded = (weight[None] * scale[:, :, None]).expand(batch, -1, -1)
        bias = self.norm.bias[None, :, None].expand(batch, -1, 1)
        hidden = torch.baddbmm(bias, folded, centred).relu_()
        return torch.matmul(self.fc1.weight, hidden)

    def step(
        self,
        state: torch.Tensor,
        keys: Optional[torch.Tensor],
        fire_rate: float,
        per_sample: bool,
        cell_index: Optional[torch.Tensor] = None,
        reference: bool = False,
        valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """One update of every cell; image channels stay pinned.

        ``reference`` uses ``delta_reference`` instead of the folded ``delta``; ``valid``
        (B, 1, V) limits the normalisation statistics as in ``delta``.
        """
        batch, channels = state.shape[:2]
        flat = state.reshape(batch, channels, -1)
        update = (self.delta_reference if reference else self.delta)(state, per_sample, valid)
        if fire_rate > 0:
            if cell_index is None:
                cell_index = torch.arange(flat.shape[2], device=state.device)
            update = update * fire_mask(keys, cell_index, fire_rate).to(update.dtype)
        pinned = flat[:, : self.input_channels]
        free = flat[:, self.input_channels :] + update[:, self.input_channels :]
        return torch.cat([pinned, free], dim=1).reshape(state.shape)


def _require_per_sample(per_sample: bool) -> None:
    if not per_sample:
        raise ValueError("valid-cell masks need per-sample statistics")
