"""The flow (loss, conversions) and the samplers, checked against the official sampler and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jitrs.flow import Flow


class TinyNet(nn.Module):
    """A small conditional denoiser with the JiT call signature net(x, t, y) -> (B, C, H, W)."""

    def __init__(self, num_classes: int = 4, channels: int = 3, size: int = 8) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, channels, size
        self.emb = nn.Embedding(num_classes + 1, channels)
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tmap = t.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return torch.tanh(self.conv(torch.cat([x, tmap], 1))) * 2 + self.emb(y)[:, :, None, None]


class CountingNet(nn.Module):
    """Wraps a net and records, per call, the batch size, the time and how many labels were null."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_classes, self.in_channels, self.input_size = net.num_classes, net.in_channels, net.input_size
        self.calls: list[tuple[int, float, int]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], float(t[0]), int((y == self.num_classes).sum())))
        return self.net(x, t, y)


@torch.no_grad()
def official_generate(net, flow: Flow, labels, noise, steps, method, cfg, interval):
    """A literal re-creation of the official Denoiser.generate: separate cond/uncond passes, always both."""
    bsz = labels.shape[0]
    z = flow.noise_scale * noise
    timesteps = torch.linspace(0.0, 1.0, steps + 1).view(-1, *([1] * z.ndim)).expand(-1, bsz, -1, -1, -1)

    def forward_sample(z, t):
        x_cond = net(z, t.flatten(), labels)
        v_cond = (x_cond - z) / (1.0 - t).clamp_min(flow.t_eps)
        x_uncond = net(z, t.flatten(), torch.full_like(labels, net.num_classes))
        v_uncond = (x_uncond - z) / (1.0 - t).clamp_min(flow.t_eps)
        low, high = interval
        mask = (t < high) & ((low == 0) | (t > low))
        scale = torch.where(mask, cfg, 1.0)
        return v_uncond + scale * (v_cond - v_uncond)

    def euler(z, t, t_next):
        return z + (t_next - t) * forward_sample(z, t)

    def heun(z, t, t_next):
        v_t = forward_sample(z, t)
        z_euler = z + (t_next - t) * v_t
        v_next = forward_sample(z_euler, t_next)
        return z + (t_next - t) * (0.5 * (v_t + v_next))

    stepper = heun if method == "heun" else euler
    for i in range(steps - 1):
        z = stepper(z, timesteps[i], timesteps[i + 1])
    return euler(z, timesteps[-2], timesteps[-1])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture()
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.mark.parametrize(
    ("method", "steps", "cfg", "interval"),
    [
        ("heun", 50, 3.0, (0.1, 1.0)),
        ("euler", 20, 2.0, (0.0, 0.7)),
        ("heun", 7, 1.0, (0.0, 1.0)),
        ("heun", 10, 1.5, (0.25, 0.8)),
    ],
)
@pytest.mark.parametrize("noise_scale", [1.0, 2.0])
def test_sample_equals_official(net, method, steps, cfg, interval, noise_scale):
    flow = Flow(noise_scale=noise_scale)
    y = torch.tensor([0, 1, 2, 3, 1])
    noise = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = flow.sample(net, y, steps=steps, method=method, cfg=cfg, interval=interval, noise=noise)
    ref = official_generate(net, flow, y, noise, steps, method, cfg, interval)
    assert rel_err(ours, ref) < 1e-4


def test_euler_one_step_is_one_explicit_update(net):
    flow = Flow(noise_scale=2.0)
    y = torch.tensor([1, 2])
    noise = torch.randn(2, 3, 8, 8)
    z0 = 2.0 * noise
    # From t = 0 to 1 in one step: z1 = z0 + 1·(x̂ − z0)/max(1 − 0, t_eps) = x̂(z0, 0).
    expected = net(z0, torch.zeros(2), y)
    out = flow.sample(net, y, steps=1, method="euler", noise=noise)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


class FixedImageNet(nn.Module):
    """Always predicts the same clean image x*."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.num_classes, self.in_channels, self.input_size = 10, target.shape[0], target.shape[-1]

    def forward(self, x, t, y):
        return self.target.expand_as(x)


def scalar_error_factor(steps: int, method: str, t_eps: float) -> float:
    """e = z − x* obeys e' = −e / max(1 − t, t_eps) when x̂ ≡ x*: run the same solver on that scalar ODE.

    Unclamped steps keep e = (1 − t)·e0 exactly; only steps from t > 1 − t_eps see the clamp, e.g. the final
    Euler step from 0.98 multiplies e by 1 − 0.02/0.05 = 0.6 (z_final = 0.6·z + 0.4·x*).
    """
    grid = [i / steps for i in range(steps + 1)]
    e = 1.0
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        dt = t_next - t
        v = -e / max(1 - t, t_eps)
        if method == "heun" and i < steps - 1:
            v = 0.5 * (v - (e + dt * v) / max(1 - t_next, t_eps))
        e += dt * v
    return e


@pytest.mark.parametrize("method", ["heun", "euler"])
@pytest.mark.parametrize("steps", [50, 8])
def test_fixed_prediction_sends_samples_to_it_as_the_clamp_implies(method, steps):
    x_star = torch.rand(3, 8, 8) * 2 - 1
    flow = Flow(noise_scale=1.0)
    noise = torch.randn(4, 3, 8, 8)
    out = flow.sample(FixedImageNet(x_star), torch.zeros(4, dtype=torch.long), steps=steps, method=method, noise=noise)
    factor = scalar_error_factor(steps, method, flow.t_eps)
    assert 0 <= factor < 0.03  # the samples end at or close to x*
    torch.testing.assert_close(out, x_star + factor * (noise - x_star), rtol=0, atol=1e-5)


def test_last_euler_step_from_098_is_the_official_mix():
    # Reference: "the last step from 0.98 gives 0.6·z + 0.4·x̂".
    x_star = torch.rand(3, 8, 8)
    z = torch.randn(2, 3, 8, 8)
    v = Flow().convert(x_star.expand_as(z), z, torch.tensor(0.98), "v")
    torch.testing.assert_close(z + 0.02 * v, 0.6 * z + 0.4 * x_star, rtol=0, atol=1e-5)


def test_cfg_one_runs_no_uncond_pass_and_equals_no_guidance(net):
    flow = Flow()
    y = torch.tensor([0, 3, 2])
    noise = torch.randn(3, 3, 8, 8)
    counting = CountingNet(net)
    out = flow.sample(counting, y, steps=10, cfg=1.0, interval=(0.1, 1.0), noise=noise)
    assert all(batch == 3 and nulls == 0 for batch, _, nulls in counting.calls)
    assert len(counting.calls) == 19  # 9 Heun steps × 2 + the final Euler step
    ref = official_generate(net, flow, y, noise, 10, "heun", 1.0, (0.0, 1.0))
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize(("steps", "interval"), [(50, (0.1, 1.0)), (10, (0.0, 0.5)), (12, (0.3, 0.75))])
def test_uncond_half_runs_only_inside_the_guidance_interval(net, steps, interval):
    flow = Flow()
    y = torch.tensor([0, 1])
    counting = CountingNet(net)
    flow.sample(counting, y, steps=steps, cfg=2.5, interval=interval, noise=torch.randn(2, 3, 8, 8))
    # Independently: the official evaluation times, and where its float32 mask is on.
    grid = np.linspace(0, 1, steps + 1).astype(np.float32)
    times = [t for i in range(steps - 1) for t in (grid[i], grid[i + 1])] + [grid[steps - 1]]
    lo, hi = np.float32(interval[0]), np.float32(interval[1])
    guided = [bool(t < hi and (lo == 0 or t > lo)) for t in times]
    assert len(counting.calls) == len(times)
    for (batch, t, nulls), g, t_ref in zip(counting.calls, guided, times, strict=True):
        assert t == pytest.approx(float(t_ref), abs=1e-7)
        assert (batch, nulls) == ((4, 2) if g else (2, 0))
    assert 0 < sum(guided) < len(times)


def test_same_noise_same_samples_and_generator_reproducible(net):
    flow = Flow()
    y = torch.tensor([2, 1])
    a = flow.sample(net, y, steps=5, cfg=2.0, generator=torch.Generator().manual_seed(7))
    b = flow.sample(net, y, steps=5, cfg=2.0, generator=torch.Generator().manual_seed(7))
    c = flow.sample(net, y, steps=5, cfg=2.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("pred", ["x", "eps", "v"])
def test_conversions_round_trip(pred):
    # Build x, ε, v consistent with z = t·x + (1 − t)·ε, v = x − ε, for t away from the clamps.
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.linspace(0.1, 0.9, 6).view(-1, 1, 1, 1)
    z = t * x + (1 - t) * eps
    truth = {"x": x, "eps": eps, "v": x - eps}
    flow = Flow(pred=pred)
    for space in ("x", "eps", "v"):
        torch.testing.assert_close(flow.convert(truth[pred], z, t, space), truth[space], rtol=1e-5, atol=1e-5)


def test_x_to_v_uses_the_official_clamp():
    flow = Flow(t_eps=0.05)
    z, xh = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 3.0)
    t = torch.full((1, 1, 1, 1), 0.99)
    assert float(flow.convert(xh, z, t, "v")) == pytest.approx((3.0 - 1.0) / 0.05)


def test_loss_equals_the_official_formula_with_forced_t_and_noise(net):
    flow = Flow(noise_scale=2.0)
    net.train()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    y = torch.tensor([0, 1, 2, 3])
    t = torch.tensor([0.1, 0.5, 0.9, 0.99])
    noise = torch.randn(4, 3, 8, 8) * 2.0
    tb = t.view(-1, 1, 1, 1)
    z = tb * x + (1 - tb) * noise
    v = (x - z) / (1 - tb).clamp_min(0.05)
    v_pred = (net(z, t, y) - z) / (1 - tb).clamp_min(0.05)
    expected = ((v - v_pred) ** 2).mean(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(flow.loss(net, x, y, t=t, noise=noise), expected)


class LabelRecorder(TinyNet):
    def forward(self, x, t, y):
        self.seen = y.clone()
        return super().forward(x, t, y)


def test_label_drop_only_when_training_and_not_forced():
    torch.manual_seed(0)
    net = LabelRecorder(num_classes=4)
    flow = Flow(label_drop=0.5)
    x = torch.zeros(4000, 3, 8, 8)
    y = torch.randint(0, 4, (4000,))
    net.train()
    flow.loss(net, x, y)
    dropped = float((net.seen == 4).float().mean())
    assert 0.45 < dropped < 0.55
    assert torch.equal(net.seen[net.seen != 4], y[net.seen != 4])
    flow.loss(net, x, y, t=torch.full((4000,), 0.5))
    assert torch.equal(net.seen, y)
    net.eval()
    flow.loss(net, x, y)
    assert torch.equal(net.seen, y)


def test_t_sampler_is_logit_normal():
    flow = Flow(P_mean=-0.8, P_std=0.8)
    t = flow.sample_t(200_000, generator=torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert float(logit.mean()) == pytest.approx(-0.8, abs=0.01)
    assert float(logit.std()) == pytest.approx(0.8, abs=0.01)


def test_bad_arguments_are_refused(net):
    with pytest.raises(ValueError, match="pred"):
        Flow(pred="noise")
    with pytest.raises(ValueError, match="steps"):
        Flow().sample(net, torch.tensor([0]), steps=0)
    with pytest.raises(ValueError, match="method"):
        Flow().sample(net, torch.tensor([0]), method="rk4")


class DtypeNet(nn.Module):
    """Wraps a net and records, per call, the dtype of z, whether autocast was on, and the dtype its
    convolution computes in."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_classes, self.in_channels, self.input_size = net.num_classes, net.in_channels, net.input_size
        self.seen: list[tuple[torch.dtype, bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        conv_dtype = self.net.conv(torch.cat([x, x[:, :1]], 1)).dtype
        self.seen.append((x.dtype, torch.is_autocast_enabled(x.device.type), conv_dtype))
        return self.net(x, t, y)


def test_bf16_sampling_runs_only_the_network_in_bf16() -> None:
    """With net_dtype the network computes in bf16 under autocast, while z, the velocities and the guidance
    combination stay float32 between steps; without it nothing is autocast."""
    torch.manual_seed(0)
    net = DtypeNet(TinyNet())
    noise, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    kwargs = {"steps": 6, "cfg": 3.0, "interval": (0.1, 1.0), "noise": noise}
    z16 = Flow().sample(net, y, net_dtype=torch.bfloat16, **kwargs)
    assert z16.dtype == torch.float32
    assert len(net.seen) == 11 and set(net.seen) == {(torch.float32, True, torch.bfloat16)}
    net.seen.clear()
    z32 = Flow().sample(net, y, **kwargs)
    assert set(net.seen) == {(torch.float32, False, torch.float32)}
    # bf16 changes the result a little (it did run in bf16), not by the image's scale.
    diff = (z16 - z32).abs()
    assert 0 < diff.max() < 0.1
