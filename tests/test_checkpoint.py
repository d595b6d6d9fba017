"""Checkpoint reading and writing on real files: official .pth, jitrs .pt, .safetensors."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import pytest
import sklearn.datasets
import torch

import jitrs
from jitrs.errors import UserError
from testkit.official_jit import OfficialJiT

# JiT-S/4 at 32 px: small enough to write three weight sets per test.
SMALL = {**jitrs.JiT_models["JiT-S/4"].to_dict(), "num_classes": 10}


def official_args(**overrides: object) -> argparse.Namespace:
    """The argparse.Namespace official main_jit.py pickles into its checkpoints (some of its flags)."""
    args = {
        "model": "JiT-S/4",
        "img_size": 32,
        "attn_dropout": 0.0,
        "proj_dropout": 0.0,
        "epochs": 600,
        "batch_size": 128,
        "blr": 5e-5,
        "lr": 2e-4,
        "ema_decay1": 0.9999,
        "ema_decay2": 0.9996,
        "P_mean": -0.8,
        "P_std": 0.8,
        "noise_scale": 2.0,
        "t_eps": 0.05,
        "label_drop_prob": 0.1,
        "sampling_method": "heun",
        "num_sampling_steps": 50,
        "cfg": 2.9,
        "interval_min": 0.1,
        "interval_max": 1.0,
        "class_num": 10,
        "data_path": "/data/imagenet",
        "output_dir": "./output_dir",
        "resume": "./output_dir",
        "distributed": True,
        "gpu": 0,
    }
    args.update(overrides)
    return argparse.Namespace(**args)


@functools.cache
def official_nets() -> tuple[list[OfficialJiT], dict]:
    """Three OfficialJiT nets with random weights (model, ema1, ema2) and a real AdamW state for the first."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = OfficialJiT(**SMALL)
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.1)
        nets.append(net.eval())
    opt = torch.optim.AdamW(nets[0].parameters(), lr=1e-4, betas=(0.9, 0.95))
    nets[0](torch.randn(1, 3, 32, 32), torch.rand(1), torch.tensor([3])).mean().backward()
    opt.step()
    return nets, opt.state_dict()


def write_official(path: Path, args: object = None, drop_key: str | None = None) -> list[OfficialJiT]:
    """An official-format checkpoint-last.pth; returns the three OfficialJiT nets whose weights it holds."""
    nets, opt_state = official_nets()
    sds = [{"net." + k: v for k, v in net.state_dict().items()} for net in nets]
    if drop_key is not None:
        del sds[1]["net." + drop_key]
    payload = {
        "model": sds[0],
        "optimizer": opt_state,
        "epoch": 41,
        "args": args if args is not None else official_args(),
        "model_ema1": sds[1],
        "model_ema2": sds[2],
    }
    torch.save(payload, path)
    return nets


def sample_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(2, 3, 32, 32, generator=gen), torch.rand(2, generator=gen), torch.tensor([1, 10])


# ---------------------------------------------------------------- official checkpoints


def test_official_checkpoint_loads_with_its_config_and_all_three_weight_sets(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-last.pth"
    nets = write_official(path)
    ckpt = jitrs.load_checkpoint(path)
    assert ckpt.name == "JiT-S/4"
    assert ckpt.config == {**jitrs.JiT(**SMALL).config}
    assert ckpt.noise_scale == 2.0
    assert ckpt.flow["P_mean"] == -0.8 and ckpt.flow["label_drop"] == 0.1 and ckpt.flow["cfg"] == 2.9
    assert set(ckpt.weights) == {"model", "ema1", "ema2"}
    assert not any(k.startswith("net.") for k in ckpt.weights["ema1"])
    assert ckpt.raw["epoch"] == 41 and "state" in ckpt.raw["optimizer"]
    x, t, y = sample_inputs()
    with torch.no_grad():
        for kind, net in zip(("model", "ema1", "ema2"), nets, strict=True):
            model = ckpt.build(ema=kind)
            assert not model.training
            ours, ref = model(x, t, y), net(x, t, y)
            assert ((ours - ref).abs().max() / ref.abs().max()).item() < 1e-5, kind
        # The default is the first EMA, as in the official evaluation.
        assert torch.equal(ckpt.build()(x, t, y), ckpt.build(ema="ema1")(x, t, y))


def test_built_model_does_not_share_storage_with_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-last.pth"
    write_official(path)
    ckpt = jitrs.load_checkpoint(path)
    model = ckpt.build(ema="model")
    before = ckpt.weights["model"]["final_layer.linear.weight"].clone()
    with torch.no_grad():
        model.final_layer.linear.weight.add_(1.0)
    assert torch.equal(ckpt.weights["model"]["final_layer.linear.weight"], before)


def test_official_checkpoint_missing_a_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-last.pth"
    write_official(path, drop_key="blocks.3.mlp.w3.bias")
    with pytest.raises(UserError, match=r"'ema1' weights lack blocks\.3\.mlp\.w3\.bias"):
        jitrs.load_checkpoint(path)


def test_weights_of_another_architecture_are_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-last.pth"
    write_official(path, args=official_args(img_size=64))  # args say 64 px, weights are for 32 px
    with pytest.raises(UserError, match=r"another architecture: pos_embed has shape \(1, 64, 192\)"):
        jitrs.load_checkpoint(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (official_args(model="JiT-Q/16"), "unknown model 'JiT-Q/16'"),
        (argparse.Namespace(img_size=32, class_num=10), "its 'args' lacks model"),
        ({"model": "JiT-S/4"}, "'args' is a dict, not the argparse.Namespace"),
    ],
)
def test_official_checkpoint_with_unusable_args_is_refused(tmp_path: Path, args: object, message: str) -> None:
    path = tmp_path / "checkpoint-last.pth"
    write_official(path, args=args)
    with pytest.raises(UserError, match=message):
        jitrs.load_checkpoint(path)


# ---------------------------------------------------------------- refusing unsafe and non-checkpoint files


class NotAllowed:
    """A class a checkpoint must not be allowed to instantiate."""

    def __init__(self) -> None:
        self.x = 1


class RunsACommand:
    """Unpickling this would run a shell command (the classic malicious-pickle payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_a_custom_class_is_refused_for_safety(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": official_args(), "extra": NotAllowed()}, path)
    with pytest.raises(UserError, match=r"refused for safety.*NotAllowed"):
        jitrs.load_checkpoint(path)


def test_pickle_with_an_os_system_reduce_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "args": official_args(), "payload": RunsACommand(marker)}, path)
    with pytest.raises(UserError, match=r"refused for safety.*\(posix\.system\)"):
        jitrs.load_checkpoint(path)
    assert not marker.exists()


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    jpeg = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    with pytest.raises(UserError, match=r"china\.jpg: not a checkpoint"):
        jitrs.load_checkpoint(jpeg)

    text = tmp_path / "notes.pth"
    text.write_text("epoch 40: loss 0.12\n")
    with pytest.raises(UserError, match="not a checkpoint"):
        jitrs.load_checkpoint(text)

    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(UserError, match=r"not a checkpoint \(it holds a Tensor"):
        jitrs.load_checkpoint(tensor_only)

    other_dict = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other_dict)
    with pytest.raises(UserError, match=r"not a JiT checkpoint.*found keys state_dict"):
        jitrs.load_checkpoint(other_dict)

    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist"):
        jitrs.load_checkpoint(tmp_path / "missing.pth")


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-last.pth"
    write_official(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        jitrs.load_checkpoint(path)


# ---------------------------------------------------------------- jitrs checkpoints


def test_jitrs_checkpoint_round_trip_keeps_training_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = jitrs.JiT(**SMALL)
    ema = {k: v + 0.5 for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)
    x, t, y = sample_inputs()
    model(x, t, y).pow(2).mean().backward()
    opt.step()
    payload = jitrs.checkpoint_payload(
        model,
        name="JiT-S/4",
        flow={"noise_scale": 1.0, "P_mean": -0.8},
        emas={"ema1": ema},
        ema_decays={"ema1": 0.999},
        class_names=[f"class{i}" for i in range(10)],
        step=123,
        optimizer=opt.state_dict(),
        rng=torch.get_rng_state(),
        epoch=4,
    )
    path = tmp_path / "run" / "checkpoint.pt"
    jitrs.save_checkpoint(path, payload)
    # The format is plain containers and tensors: torch's safe loader reads it with no allow-list at all.
    assert torch.load(path, weights_only=True)["format"] == "jitrs"
    ckpt = jitrs.load_checkpoint(path)
    assert ckpt.config == model.config and ckpt.name == "JiT-S/4" and ckpt.step == 123
    assert ckpt.class_names == [f"class{i}" for i in range(10)]
    assert set(ckpt.weights) == {"model", "ema1"}
    assert ckpt.raw["epoch"] == 4 and torch.equal(ckpt.raw["rng"], payload["rng"])
    assert ckpt.raw["optimizer"]["param_groups"][0]["lr"] == 1e-4
    with torch.no_grad():
        assert torch.equal(ckpt.build(ema="model")(x, t, y), model.eval()(x, t, y))
        # The default build takes the first EMA.
        assert torch.equal(ckpt.build().blocks[0].attn.qkv.weight, ema["blocks.0.attn.qkv.weight"])
    assert ckpt.ema_sets() == {"ema1": 0.999}
    with pytest.raises(UserError, match=r"holds no ema2 weights; it holds model, ema1 \(0\.999\)$"):
        ckpt.build(ema="ema2")


def test_compiled_or_wrapped_state_dicts_are_stored_unprefixed(tmp_path: Path) -> None:
    model = jitrs.JiT(**SMALL)
    wrapped = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    payload = jitrs.checkpoint_payload(model, emas={"ema1": wrapped})
    assert all(not k.startswith("_orig_mod.") for k in payload["ema1"])
    jitrs.save_checkpoint(tmp_path / "c.pt", payload)
    assert jitrs.load_checkpoint(tmp_path / "c.pt").weights["ema1"].keys() == model.state_dict().keys()


def test_jitrs_checkpoint_of_a_newer_version_or_bad_config_is_refused(tmp_path: Path) -> None:
    model = jitrs.JiT(**SMALL)
    newer = {**jitrs.checkpoint_payload(model), "version": 2}
    jitrs.save_checkpoint(tmp_path / "newer.pt", newer)
    with pytest.raises(UserError, match="version 2 is not supported"):
        jitrs.load_checkpoint(tmp_path / "newer.pt")
    bad = {**jitrs.checkpoint_payload(model), "config": {**model.config, "n_layers": 3}}
    jitrs.save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(UserError, match="unknown model config keys n_layers"):
        jitrs.load_checkpoint(tmp_path / "bad.pt")
    impossible = {**jitrs.checkpoint_payload(model), "config": {**model.config, "patch_size": 5}}
    jitrs.save_checkpoint(tmp_path / "impossible.pt", impossible)
    with pytest.raises(UserError, match=r"cannot build a JiT .*input_size 32 is not a multiple of patch_size 5"):
        jitrs.load_checkpoint(tmp_path / "impossible.pt")


# ---------------------------------------------------------------- safetensors


def test_safetensors_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = jitrs.JiT(**SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    path = tmp_path / "jit-s4.safetensors"
    jitrs.save_safetensors(path, model, name="JiT-S/4", flow={"noise_scale": 2.0}, class_names=["cat", "dog"], step=9)
    ckpt = jitrs.load_checkpoint(path)
    assert ckpt.config == model.config and ckpt.name == "JiT-S/4" and ckpt.noise_scale == 2.0
    assert ckpt.class_names == ["cat", "dog"] and ckpt.step == 9
    x, t, y = sample_inputs()
    with torch.no_grad():
        assert torch.equal(ckpt.build()(x, t, y), model.eval()(x, t, y))
    # A state dict needs its config given explicitly.
    with pytest.raises(ValueError, match="config is required"):
        jitrs.save_safetensors(tmp_path / "x.safetensors", model.state_dict())


def test_safetensors_without_jitrs_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(UserError, match="without jitrs metadata"):
        jitrs.load_checkpoint(path)


# ---------------------------------------------------------------- atomic writes


def test_save_checkpoint_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    jitrs.save_checkpoint(path, {"format": "jitrs", "step": 1})
    jitrs.save_checkpoint(path, {"format": "jitrs", "step": 2})
    assert torch.load(path, weights_only=True)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_failed_save_keeps_the_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    jitrs.save_checkpoint(path, {"format": "jitrs", "step": 1})
    before = path.read_bytes()
    with pytest.raises(Exception, match=r"[Pp]ickle|lambda"):
        jitrs.save_checkpoint(path, {"format": "jitrs", "step": 2, "bad": lambda: 0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    with pytest.raises(TypeError, match="payload must be a dict"):
        jitrs.save_checkpoint(path, [1, 2])
