"""configs/realtime.yaml and the serve command line."""

from __future__ import annotations

import pytest

from realtime.config import ConfigError
from realtime.server.config import DEFAULT_CONFIG, RealtimeConfig, load_realtime_config


def test_shipped_config_matches_dataclass_defaults():
    cfg = load_realtime_config(DEFAULT_CONFIG)
    assert cfg == RealtimeConfig()
    assert cfg.host == "127.0.0.1" and cfg.fps == 25 and cfg.latency_budget_ms == 170
    assert cfg.ice_servers == [] and cfg.renderer == "embedded" and cfg.budget_s == pytest.approx(0.17)


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "rt.yaml"
    p.write_text("port: 9000\nlimits:\n  max_sizee: 3\n")
    with pytest.raises(ConfigError, match=r"rt\.yaml.*limits\.max_sizee"):
        load_realtime_config(p)


def test_bad_values_are_errors(tmp_path):
    p = tmp_path / "rt.yaml"
    p.write_text("lookahead: medium\n")
    with pytest.raises(ConfigError, match="lookahead"):
        load_realtime_config(p)
    assert RealtimeConfig(lookahead="low").budget_s == pytest.approx(0.09)


def test_serve_command_parses_overrides():
    from realtime.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "0", "--low-latency", "--avatar", "/tmp/av"])
    assert args.port == 0 and args.low_latency and args.avatar == "/tmp/av" and args.host is None
    assert args.func.__module__ == "realtime.cli.serve"
