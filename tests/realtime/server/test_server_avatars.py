"""`syncvid serve --avatars DIR` and the avatar-library settings of the server's config."""

from __future__ import annotations

import pytest

from realtime.cli import build_parser, main
from realtime.config import ConfigError
from realtime.server.config import RealtimeConfig, load_realtime_config
from realtime.session.config import SessionConfig


def test_the_flag_and_the_limit_reach_the_config(tmp_path):
    args = build_parser().parse_args(["serve", "--avatars", str(tmp_path)])
    assert args.avatars == str(tmp_path)
    cfg = RealtimeConfig()
    assert cfg.avatars_dir is None and cfg.limits.max_avatars_loaded == 4
    p = tmp_path / "rt.yaml"
    p.write_text(f"avatars_dir: {tmp_path}\nlimits:\n  max_avatars_loaded: 2\n")
    cfg = load_realtime_config(p)
    assert cfg.avatars_dir == str(tmp_path) and cfg.limits.max_avatars_loaded == 2
    p.write_text("limits:\n  max_avatars_loaded: 0\n")
    with pytest.raises(ConfigError, match="limits.max_avatars_loaded must be >= 1, got 0"):
        load_realtime_config(p)


def test_a_session_config_carries_the_chosen_avatar():
    assert SessionConfig().avatar == "default"
    assert SessionConfig.from_realtime(RealtimeConfig(), seed=3, avatar="anna").avatar == "anna"
    assert SessionConfig.from_realtime(RealtimeConfig()).avatar == "default"


@pytest.mark.parametrize("what", ["missing", "file"])
def test_serve_with_a_bad_avatars_folder_fails_before_loading_models(tmp_path, capsys, what):
    path = tmp_path / "avatars"
    if what == "file":
        path.write_text("")
    assert main(["serve", "--port", "0", "--avatars", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    state = "does not exist" if what == "missing" else "is not a folder"
    assert err == [(f"syncvid serve: error: avatar library {path} {state}: pass --avatars DIR (or avatars_dir "
                    "in the config) naming a folder of photos, videos or prepared avatar folders")]
