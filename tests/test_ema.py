"""Any number of EMAs: trained with `--ema`, saved as ema1..emaK with their decays, selected by position, key or
decay in `sample`, restored strictly on resume; old and official checkpoints keep their two."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import jitrs
from jitrs.cli import app
from jitrs.ema import EMAs
from jitrs.ema_keys import check_ema_spec
from jitrs.errors import UserError
from jitrs.sample import SampleOptions
from jitrs.sample import sample as jitrs_sample
from jitrs.train_config import TrainConfig, parse_decays, read_config_file, resumed_defaults
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import one_error_line, run_cli
from testkit.train_runs import DECAYS, ema_runs, losses, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ema_runs(tmp_path_factory)


def checkpoint(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / f"checkpoint-{step:07d}.pt", weights_only=True)


def test_three_emas_are_the_exponential_averages_of_the_trained_weights(runs: dict[str, Path]) -> None:
    """Each saved EMA equals the average recomputed here from the model's weights at every step, update by update
    as the original two-EMA code did it (one lerp per parameter), so the fused update changed no bit of it."""
    init = jitrs.load_checkpoint(runs["init"]).weights["model"]
    models = [init] + [checkpoint(runs["three"], s)["model"] for s in (1, 2, 3)]
    final = checkpoint(runs["three"], 3)
    assert final["ema_decays"] == {"ema1": 0.9, "ema2": 0.8, "ema3": 0.7}
    assert final["train_config"]["ema"] == DECAYS
    for i, decay in enumerate(DECAYS):
        key = f"ema{i + 1}"
        ema = {k: v.clone() for k, v in init.items()}
        for model in models[1:]:
            for k in ema:
                ema[k] = torch.lerp(ema[k], model[k], 1.0 - decay)
        for k in ema:
            assert torch.equal(final[key][k], ema[k]), (key, k)
        # and it is the average the decay defines (not the lerp's weight misread as the decay)
        k = "final_layer.linear.weight"
        expected = init[k] * decay**3 + sum(m[k] * (1 - decay) * decay ** (3 - s) for s, m in enumerate(models) if s)
        torch.testing.assert_close(final[key][k], expected)
    w = "blocks.0.attn.qkv.weight"
    assert len({final[key][w].sum().item() for key in ("model", "ema1", "ema2", "ema3")}) == 4


def test_neither_the_number_of_emas_nor_online_evaluation_changes_training(runs: dict[str, Path]) -> None:
    """Three EMAs without evaluation, two with an evaluation at steps 2 and 3: the same losses, bit for bit."""
    assert list(losses(runs["three"])) == [1, 2, 3]
    assert losses(runs["three"]) == losses(runs["eval"])
    a, b = checkpoint(runs["three"], 3), checkpoint(runs["eval"], 3)
    assert b["ema_decays"] == {"ema1": 0.9999, "ema2": 0.9996} and "ema3" not in b
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_sample_selects_an_ema_by_position_key_or_decay(runs: dict[str, Path]) -> None:
    out = runs["root"] / "samples"

    def sample(ema: str) -> np.ndarray:
        jitrs_sample(SampleOptions(ckpt=runs["three"], out=out / ema, n=2, steps=2, ema=ema, device="cpu"))
        return np.stack([np.asarray(Image.open(p)) for p in sorted((out / ema).glob("*.png"))])

    third = sample("3")
    assert np.array_equal(third, sample("0.7")) and np.array_equal(third, sample("ema3"))
    assert not np.array_equal(third, sample("1"))
    line = one_error_line(run_cli("sample", "--ckpt", runs["three"], "--out", out / "four", "--ema", "4"))
    held = "it holds model, ema1 (0.9), ema2 (0.8), ema3 (0.7)"
    assert line == f"error: --ema 4: {runs['three'] / 'checkpoint-0000003.pt'} holds no ema4 weights; {held}"
    assert not (out / "four").exists() or not any((out / "four").iterdir())  # refused before any sampling
    with pytest.raises(UserError, match=rf"--ema 0\.5: .* holds no EMA of decay 0\.5 weights; {re.escape(held)}$"):
        jitrs_sample(SampleOptions(ckpt=runs["three"], out=out / "half", n=2, ema="0.5"))


def test_resume_restores_every_ema_and_refuses_another_list(runs: dict[str, Path]) -> None:
    part = runs["root"] / "part"
    part.mkdir()
    shutil.copy(runs["three"] / "checkpoint-0000002.pt", part)
    shutil.copy(runs["three"] / "metrics.jsonl", part)
    # The command line itself, in this process: refused before anything is set up.
    result = CliRunner().invoke(app, ["train", "--resume", str(part), "--steps", "3", "--ema", "0.9,0.8"])
    assert isinstance(result.exception, UserError) and str(result.exception) == (
        f"--ema 0.9,0.8: the run in {part / 'checkpoint-0000002.pt'} keeps the EMAs 0.9,0.8,0.7; resume "
        "with those (the default), or start a new run from its weights with --init"
    )
    train("--resume", part, "--steps", "3", cache=runs["cache"])
    a, b = checkpoint(runs["three"], 3), checkpoint(part, 3)
    for key in ("model", "ema1", "ema2", "ema3"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


# ---------------------------------------------------------------------------------------------- no training


def test_select_reads_every_spelling_and_names_what_is_held(tmp_path: Path) -> None:
    net = jitrs.JiT(**TINY)
    sd = net.state_dict()
    emas = {f"ema{i + 1}": sd for i in range(3)}
    decays = {"ema1": 0.9999, "ema2": 0.9998, "ema3": 0.9996}
    jitrs.save_checkpoint(tmp_path / "k.pt", jitrs.checkpoint_payload(net, emas=emas, ema_decays=decays))
    ckpt = jitrs.load_checkpoint(tmp_path / "k.pt")
    assert list(ckpt.weights) == ["model", "ema1", "ema2", "ema3"] and ckpt.ema_sets() == decays
    cases = {None: "ema1", "1": "ema1", "3": "ema3", "ema2": "ema2", "0.9998": "ema2", "none": "model"}
    assert {spec: ckpt.select(spec) for spec in cases} == cases
    assert ckpt.select("model") == "model" and ckpt.select("EMA3") == "ema3"
    with pytest.raises(UserError, match=r"--eval-ema 0\.999: .*k\.pt holds no EMA of decay 0\.999 weights; it holds "):
        ckpt.select("0.999", param="eval_ema")
    for bad in ("two", "0", "1.5", "-1"):
        with pytest.raises(UserError, match=f"--ema {bad}: name a weight set by position"):
            check_ema_spec(bad)
    with pytest.raises(ValueError, match="'ema4' is not the key of a given EMA"):
        jitrs.checkpoint_payload(net, emas=emas, ema_decays={"ema4": 0.5})
    with pytest.raises(ValueError, match=r"pass EMA weights as emas=\{'ema2': \.\.\.\}"):
        jitrs.checkpoint_payload(net, ema2=sd)  # weights never slip into the training state


def test_old_and_official_checkpoints_keep_their_two_emas(tmp_path: Path) -> None:
    old = make_checkpoint(tmp_path / "old.pt", TINY)  # no ema_decays, no training options: decays unknown
    ckpt = jitrs.load_checkpoint(old)
    assert ckpt.ema_sets() == {"ema1": None, "ema2": None} and ckpt.select("2") == "ema2"
    with pytest.raises(UserError, match=r"holds no EMA of decay 0\.9999 weights; .*ema1 \(decay unknown\)"):
        ckpt.select("0.9999")
    payload = torch.load(old, weights_only=True)
    payload["train_config"] = {"ema1": 0.999, "ema2": 0.99}  # a run saved before `ema` listed the decays
    torch.save(payload, tmp_path / "run.pt")
    assert jitrs.load_checkpoint(tmp_path / "run.pt").ema_sets() == {"ema1": 0.999, "ema2": 0.99}
    assert resumed_defaults("r", payload["train_config"], tmp_path / "run.pt")["ema"] == [0.999, 0.99]

    net = jitrs.JiT.from_name("JiT-S/4", input_size=16, num_classes=3)
    official = {k: {f"net.{n}": v for n, v in net.state_dict().items()} for k in ("model", "model_ema1", "model_ema2")}
    args = argparse.Namespace(model="JiT-S/4", img_size=16, class_num=3, ema_decay1=0.9999, ema_decay2=0.9996)
    torch.save({**official, "args": args}, tmp_path / "checkpoint-last.pth")
    ckpt = jitrs.load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert ckpt.ema_sets() == {"ema1": 0.9999, "ema2": 0.9996} and ckpt.select("0.9996") == "ema2"


def test_ema_options_and_config_files(tmp_path: Path) -> None:
    assert TrainConfig().ema == [0.9999, 0.9996]
    assert parse_decays("0.9999,0.9998,0.9996") == [0.9999, 0.9998, 0.9996]
    for text, needle in [("0.9,1", r"in \(0, 1\), got 1\.0"), ("0.9,0.9", "distinct"), ("fast", "comma-separated")]:
        with pytest.raises(UserError, match=needle):
            parse_decays(text)
    (tmp_path / "old.toml").write_text("ema1 = 0.995\n")
    assert read_config_file(tmp_path / "old.toml") == {"ema": [0.995, 0.9996]}
    (tmp_path / "new.yaml").write_text("ema: 0.9,0.8\n")
    assert read_config_file(tmp_path / "new.yaml") == {"ema": [0.9, 0.8]}
    (tmp_path / "one.toml").write_text("ema = 0.999\n")
    assert read_config_file(tmp_path / "one.toml") == {"ema": [0.999]}
    (tmp_path / "both.yaml").write_text("ema: [0.9]\nema2: 0.8\n")
    with pytest.raises(UserError, match="give the EMA decays once"):
        read_config_file(tmp_path / "both.yaml")
    with pytest.raises(UserError, match=r"each EMA decay must be a number in \(0, 1\), got 0"):
        TrainConfig(data="x", ema=[0.9, 0]).validate()


def test_emas_update_each_decay_towards_the_model() -> None:
    model = torch.nn.Linear(3, 2)
    emas = EMAs(model, [0.5, 0.25])
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    emas.update(list(model.parameters()))
    for decay, module in zip((0.5, 0.25), emas.modules().values(), strict=True):
        for e, s in zip(module.parameters(), start, strict=True):
            torch.testing.assert_close(e, s + (1 - decay))
