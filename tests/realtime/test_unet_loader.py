"""realtime.unet_loader and `syncvid check-weights`: strict loading of UNet checkpoints."""

import pytest
import torch
import yaml

from models.unet import UNet3DConditionModel, tiny_config
from realtime.cli import main
from realtime.errors import WeightsError
from realtime.unet_loader import KeyReport, check_unet_checkpoint, compare_keys, load_unet


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("unet")
    model = UNet3DConditionModel.from_config(tiny_config()).randomize_(5)
    sd = model.state_dict()
    torch.save({"state_dict": sd, "global_step": 12}, d / "wrapped.pt")
    torch.save(sd, d / "bare.pt")
    v10 = {k.replace(".attn2.", ".audio_cross_attn.attn.").replace(".norm2.", ".audio_cross_attn.norm.")
           if "transformer_blocks" in k and "motion" not in k else k: v for k, v in sd.items()}
    torch.save({"state_dict": v10}, d / "v10.pt")
    bad = dict(sd)
    bad.pop("conv_in.bias")
    bad["unknown.weight"] = torch.zeros(2)
    bad["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    torch.save({"state_dict": bad}, d / "bad.pt")
    (d / "tiny.yaml").write_text(yaml.safe_dump({"model": tiny_config()}))
    (d / "garbage.pt").write_bytes(b"not a checkpoint")
    return d, _out(model)


def _out(model):
    g = torch.Generator().manual_seed(0)
    x, a = torch.randn(1, 13, 2, 8, 8, generator=g), torch.randn(1, 2, 50, 384, generator=g)
    with torch.no_grad():
        return model.eval()(x, 100, a).sample


@pytest.mark.parametrize("name", ["wrapped.pt", "bare.pt", "v10.pt"])
def test_load_unet_strict_roundtrip(tiny_files, name):
    d, expected = tiny_files
    loaded = load_unet(d / name, d / "tiny.yaml")
    assert not loaded.training and loaded.dtype == torch.float32
    assert torch.equal(_out(loaded), expected)


def test_load_unet_dtype(tiny_files):
    d, _ = tiny_files
    loaded = load_unet(d / "wrapped.pt", d / "tiny.yaml", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_mismatch_is_one_error_listing_keys(tiny_files):
    d, _ = tiny_files
    with pytest.raises(WeightsError) as e:
        load_unet(d / "bad.pt", d / "tiny.yaml")
    msg = str(e.value)
    assert "1 missing (conv_in.bias)" in msg and "1 unexpected (unknown.weight)" in msg
    assert "conv_out.weight: checkpoint [4, 32, 1, 1] vs model [4, 32, 3, 3]" in msg
    assert str(d / "bad.pt") in msg and "\n" not in msg


def test_long_lists_are_truncated_with_counts():
    report = compare_keys({f"k{i:02d}": (1,) for i in range(25)}, {"a": (2,), "k00": (3,)})
    assert len(report.unexpected) == 24 and report.missing == ["a"] and len(report.misshaped) == 1
    assert "24 unexpected (k01, k02, " in report.summary()
    assert "... and 14 more" in report.summary()
    assert report.lines()[-1] == "  k00: checkpoint [1] vs model [3]"
    assert KeyReport().ok


def test_unreadable_and_missing_files(tiny_files):
    d, _ = tiny_files
    with pytest.raises(WeightsError, match="does not exist"):
        load_unet(d / "nope.pt", d / "tiny.yaml")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_unet(d / "garbage.pt", d / "tiny.yaml")


def test_check_unet_checkpoint_against_full_stage2_config_uses_meta(tiny_files):
    d, _ = tiny_files
    from realtime.config import REPO_ROOT

    report = check_unet_checkpoint(d / "wrapped.pt", REPO_ROOT / "configs" / "unet" / "stage2.yaml")
    # same topology, small channels: the tiny preset lacks one 1x1 shortcut (32 -> 32) and all else is misshaped
    assert report.missing == ["down_blocks.1.resnets.0.conv_shortcut.bias", "down_blocks.1.resnets.0.conv_shortcut.weight"]
    assert not report.unexpected and len(report.misshaped) > 1000


def test_check_weights_cli(tiny_files, capsys):
    d, _ = tiny_files
    assert main(["check-weights", "--unet", str(d / "v10.pt"), "--config", str(d / "tiny.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-weights", "--unet", str(d / "bad.pt"), "--config", str(d / "tiny.yaml")]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "  conv_in.bias" in out and "  unknown.weight" in out
    assert main(["check-weights", "--unet", str(d / "nope.pt"), "--config", str(d / "tiny.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
