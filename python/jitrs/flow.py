"""The JiT flow: x-prediction with a v-loss, and the Heun/Euler ODE samplers (paper Sec. 3-4).

Time runs from t = 0 (pure noise) to t = 1 (clean data): z_t = t·x + (1 − t)·ε, ε ~ N(0, noise_scale²), and
the velocity is v = dz/dt = x − ε. The network may predict x, ε or v (`pred`, the paper's Tab. 2 ablation);
every prediction is converted to the space the loss is taken in (`loss_space`) and to v for sampling, with
the official clamps: 1 − t is clamped below at t_eps wherever it divides (and t likewise for ε-prediction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, cast

import torch
from torch import Tensor

from jitrs.paper import LABEL_DROP, P_MEAN, P_STD, SAMPLE_STEPS, T_EPS

Space = Literal["x", "eps", "v"]
SPACES: tuple[str, ...] = ("x", "eps", "v")
Net = Callable[[Tensor, Tensor, Tensor | None], Tensor]
Method = Literal["heun", "euler"]


class _JiTLike(Protocol):
    """What sampling reads from a JiT-like net, only when it needs the image shape or the null class (a net
    sampled with a given shape and no guidance, like the toy MLP, need not have these)."""

    in_channels: int
    input_size: int
    num_classes: int


def _per_sample(t: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so t broadcasts against a batch of ndim dimensions."""
    return t.reshape(-1, *([1] * (ndim - 1)))


class Flow:
    """The paper's method: t-sampler, noising, prediction conversions, the loss and the ODE samplers.

    Defaults are the official ones at 256 px (noise_scale 2.0 at 512, 4.0 at 1024).
    """

    def __init__(
        self,
        P_mean: float = P_MEAN,
        P_std: float = P_STD,
        noise_scale: float = 1.0,
        t_eps: float = T_EPS,
        label_drop: float = LABEL_DROP,
        pred: Space = "x",
        loss_space: Space = "v",
    ) -> None:
        if pred not in SPACES or loss_space not in SPACES:
            raise ValueError(
                f"pred and loss_space must be one of {SPACES}, got pred={pred!r}, loss_space={loss_space!r}"
            )
        if not 0.0 <= label_drop < 1.0:
            raise ValueError(f"label_drop must be in [0, 1), got {label_drop}")
        if noise_scale <= 0 or P_std <= 0 or not 0 < t_eps < 1:
            raise ValueError(f"need noise_scale > 0, P_std > 0 and 0 < t_eps < 1, got {noise_scale}, {P_std}, {t_eps}")
        self.P_mean, self.P_std, self.noise_scale, self.t_eps = P_mean, P_std, noise_scale, t_eps
        self.label_drop, self.pred, self.loss_space = label_drop, pred, loss_space

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as stored in a checkpoint's "flow" entry."""
        return {
            "noise_scale": self.noise_scale,
            "P_mean": self.P_mean,
            "P_std": self.P_std,
            "t_eps": self.t_eps,
            "label_drop": self.label_drop,
            "pred": self.pred,
            "loss_space": self.loss_space,
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any], noise_scale: float | None = None) -> Flow:
        """The flow of a checkpoint's "flow" entry; settings it lacks (older or official files) take the defaults.
        Raises ValueError for impossible settings."""
        known = {k: stored[k] for k in cls().to_dict() if k in stored}
        if noise_scale is not None:
            known["noise_scale"] = noise_scale
        return cls(**known)

    def __repr__(self) -> str:
        return (
            f"Flow(P_mean={self.P_mean}, P_std={self.P_std}, noise_scale={self.noise_scale}, t_eps={self.t_eps}, "
            f"label_drop={self.label_drop}, pred={self.pred!r}, loss_space={self.loss_space!r})"
        )

    # ------------------------------------------------------------------ conversions
    def convert(self, out: Tensor, z: Tensor, t: Tensor, to: Space) -> Tensor:
        """Turn the network output `out` (a `self.pred` prediction at state z, time t) into `to`-space.

        t broadcasts against z. Uses z = t·x + (1 − t)·ε and v = x − ε, dividing by max(1 − t, t_eps) when
        going from x to ε or v, and by max(t, t_eps) when going from ε to x or v.
        """
        if to == self.pred:
            return out
        one_minus_t = (1.0 - t).clamp_min(self.t_eps)
        if self.pred == "x":
            return (out - z) / one_minus_t if to == "v" else (z - t * out) / one_minus_t
        if self.pred == "eps":
            t_c = t.clamp_min(self.t_eps)
            return (z - out) / t_c if to == "v" else (z - (1.0 - t) * out) / t_c
        # pred == "v": x = z + (1 − t)·v and ε = z − t·v need no division
        return z + (1.0 - t) * out if to == "x" else z - t * out

    def target(self, x: Tensor, noise: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """The regression target in `loss_space`; the v target is the official (x − z)/max(1 − t, t_eps)."""
        if self.loss_space == "x":
            return x
        if self.loss_space == "eps":
            return noise
        return (x - z) / (1.0 - t).clamp_min(self.t_eps)

    # ------------------------------------------------------------------ training
    def sample_t(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """t = sigmoid(N(P_mean, P_std²)), shape (n,), float32."""
        return torch.sigmoid(torch.randn(n, device=device, generator=generator) * self.P_std + self.P_mean)

    def drop_labels(self, y: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
        """Replace each label by the null class (index num_classes) with probability label_drop."""
        drop = torch.rand(y.shape[0], device=y.device, generator=generator) < self.label_drop
        return torch.where(drop, torch.full_like(y, num_classes), y)

    def loss(
        self,
        net: torch.nn.Module,
        x: Tensor,
        y: Tensor | None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss for clean images x (B, ...) with labels y (B,) int64.

        z = t·x + (1 − t)·noise, noise ~ N(0, noise_scale²) unless given (a given `noise` is used as is, not
        rescaled), t ~ sigmoid(N(P_mean, P_std²)) unless given. Labels are dropped to the null class only when
        `net.training` and neither t nor noise is forced, so a forced call is deterministic. The error is
        averaged over pixels, then over the batch.
        """
        forced = t is not None or noise is not None
        if t is None:
            t = self.sample_t(x.shape[0], device=x.device)
        if noise is None:
            noise = torch.randn_like(x) * self.noise_scale
        if y is not None and net.training and not forced and self.label_drop > 0:
            y = self.drop_labels(y, cast(_JiTLike, net).num_classes)
        tb = _per_sample(t, x.ndim)
        z = tb * x + (1.0 - tb) * noise
        out = net(z, t, y).float()
        err = (self.convert(out, z, tb, self.loss_space) - self.target(x, noise, z, tb)) ** 2
        return err.mean(dim=tuple(range(1, x.ndim))).mean()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        net: Net,
        y: Tensor | None,
        steps: int = SAMPLE_STEPS,
        method: Method = "heun",
        cfg: float = 1.0,
        interval: tuple[float, float] = (0.0, 1.0),
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        shape: tuple[int, ...] | None = None,
        net_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Integrate the ODE from t = 0 to 1 and return the final z (B, C, H, W), float32.

        With `net_dtype` (bf16 on CUDA) only the network runs under autocast in that dtype: the state z, the
        velocities and the guidance combination stay float32 over every step, so rounding does not accumulate.

        Start z = noise_scale · noise (noise ~ N(0, I) from `generator` unless given); a uniform grid of
        `steps` intervals; Heun on every interval but the last, which is Euler (50 Heun steps = 99 network
        evaluations), exactly as the official sampler. Guidance v = v_u + w·(v_c − v_u) with w = cfg where
        t < interval[1] and (interval[0] == 0 or t > interval[0]), else 1. Unlike the official code, the
        conditional and unconditional halves run in ONE batched forward pass, and the unconditional half is
        not computed at all where w == 1.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if method not in ("heun", "euler"):
            raise ValueError(f"method must be 'heun' or 'euler', got {method!r}")
        lo, hi = interval
        if cfg != 1.0 and y is None:
            raise ValueError("classifier-free guidance (cfg != 1) needs class labels y")
        if noise is None:
            if shape is None:
                if y is None:
                    raise ValueError("give y, noise or shape so the batch size is known")
                jit = cast(_JiTLike, net)
                shape = (y.shape[0], jit.in_channels, jit.input_size, jit.input_size)
            device = y.device if y is not None else None
            noise = torch.randn(shape, generator=generator, device=device)
        z = self.noise_scale * noise.float()
        batch = z.shape[0]
        null = torch.full_like(y, cast(_JiTLike, net).num_classes) if cfg != 1.0 and y is not None else None
        # The grid lives on the host, in float32 like the official one, so guidance decisions need no GPU sync.
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32)
        grid_dev = grid.to(z.device)  # one copy up front; indexing it later does not sync

        def denoise(z: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
            with torch.autocast(z.device.type, dtype=net_dtype, enabled=net_dtype is not None):
                out = net(z, t, labels)
            return out.float()

        def velocity(z: Tensor, i: int) -> Tensor:
            t = grid[i]
            guided = null is not None and bool((t < hi) & ((lo == 0) | (t > lo)))
            t_dev = grid_dev[i]
            t_batch = t_dev.expand(batch)
            if not guided:
                return self.convert(denoise(z, t_batch, y), z, t_dev, "v")
            assert y is not None and null is not None  # guided implies both
            z2 = torch.cat([z, z])
            out = denoise(z2, torch.cat([t_batch, t_batch]), torch.cat([y, null]))
            v_cond, v_uncond = self.convert(out, z2, t_dev, "v").chunk(2)
            return v_uncond + cfg * (v_cond - v_uncond)

        for i in range(steps):
            dt = float(grid[i + 1] - grid[i])
            v = velocity(z, i)
            if method == "heun" and i < steps - 1:
                v = 0.5 * (v + velocity(z + dt * v, i + 1))
            z = z + dt * v
        return z
