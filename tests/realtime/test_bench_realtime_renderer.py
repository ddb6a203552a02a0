"""`syncvid bench realtime` against the diffusion renderer: the flags reach `syncvid serve`, and
``--random-weights`` writes files the server loads (tiny preset here; stage2 on a GPU machine)."""

import argparse

import pytest
import torch

from realtime.bench.loopback import server_command
from realtime.bench.random_weights import random_unet, unet_config_path, write_random_diffusion
from realtime.bench.realtime import add_arguments, prepare_renderer


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_server_command_forwards_renderer_flags_and_leaves_them_out_by_default():
    plain = server_command(parse(), 9000)
    assert plain[plain.index("serve"):] == ["serve", "--port", "9000", "--max-sessions", "7"]
    cmd = server_command(parse("--renderer", "diffusion", "--unet", "u.pt", "--unet-config", "u.yaml", "--vae", "v",
                               "--server-config", "rt.yaml", "--max-sessions", "9"), 9001, low_latency=True)
    tail = cmd[cmd.index("serve"):]
    assert tail == ["serve", "--port", "9001", "--max-sessions", "10", "--low-latency", "--config", "rt.yaml",
                    "--renderer", "diffusion", "--unet", "u.pt", "--unet-config", "u.yaml", "--vae", "v"]


def test_checkpoint_flags_alone_select_the_diffusion_renderer(tmp_path):
    args = parse("--unet", "u.pt", "--vae", "v")
    prepare_renderer(args, str(tmp_path))
    assert args.renderer == "diffusion" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (("--random-weights", "tiny", "--unet", "u.pt"), "leave out --unet"),
    (("--random-weights", "tiny", "--renderer", "embedded"), "for the diffusion renderer"),
    (("--random-weights", "stage9"), "unknown UNet config 'stage9': use one of tiny, second_stage, stage2"),
])
def test_random_weights_misuse_is_a_clear_error(tmp_path, argv, message):
    from realtime.cli import CLIError

    with pytest.raises(CLIError, match=message):
        prepare_renderer(parse(*argv), str(tmp_path))


def test_random_weights_are_written_where_the_server_loads_them(tmp_path):
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.server.config import DiffusionConfig
    from realtime.inference.factory import check_diffusion_files

    args = parse("--random-weights", "tiny")
    prepare_renderer(args, str(tmp_path))
    assert args.renderer == "diffusion"
    assert args.unet == str(tmp_path / "unet.pt") and (tmp_path / "vae" / "config.json").is_file()
    saved = torch.load(args.unet, map_location="cpu", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())  # half the disk
    check_diffusion_files(DiffusionConfig(unet=args.unet, unet_config=args.unet_config, vae=args.vae))
    r = DiffusionRenderer.from_files(args.unet, args.unet_config, args.vae, device="cpu")
    model = random_unet("tiny")
    for name, p in model.state_dict().items():  # the fp16 file holds the random model's values
        torch.testing.assert_close(r.unet.state_dict()[name], p.half().float())


def test_full_configs_resolve_to_the_shipped_yaml_and_write_the_same_values():
    assert unet_config_path("stage2").name == "stage2.yaml"
    a, b = random_unet("tiny", seed=1), random_unet("tiny", seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = random_unet("tiny", seed=2)
    assert not torch.equal(next(iter(a.state_dict().values())), next(iter(c.state_dict().values())))


def test_the_command_line_reports_misuse_in_one_line(capsys):
    from realtime.cli import main

    assert main(["bench", "realtime", "--random-weights", "stage9", "--skip-capacity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("syncvid bench: error: --random-weights: unknown UNet config 'stage9'")


def test_write_random_diffusion_rejects_unknown_names_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown UNet config"):
        write_random_diffusion("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()
