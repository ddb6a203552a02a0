import subprocess
import sys

from realtime.cli import SUBCOMMANDS, build_parser, main
from realtime.cli.bench import BENCHMARKS


def _choices(parser):
    return next(a for a in parser._actions if a.dest in ("command", "bench")).choices


def test_every_subcommand_and_benchmark_is_registered():
    parser = build_parser()
    names = set(_choices(parser))
    assert names == {n.replace("_", "-") for n in SUBCOMMANDS}
    bench = _choices(parser)["bench"]
    assert set(_choices(bench)) == set(BENCHMARKS)


def test_user_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.wav"
    code = main(["features", str(missing), "--out", str(tmp_path / "f.npz"), "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("syncvid features: error:") and "nope.wav" in err[0]


def test_console_help_is_cheap_to_import():
    # --help must not import torch (keeps every command's start fast)
    code = "import sys; from realtime.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
