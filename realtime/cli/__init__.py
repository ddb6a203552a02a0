"""`syncvid` command line. Each subcommand lives in its own module of this package.

A subcommand module defines ``register(subparsers)`` (adds its parser and sets ``func``). Modules
must be cheap to import: heavy imports (torch, aiortc, ...) go inside the function that runs.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys

from realtime.errors import SyncVidError

# name of the module in realtime.cli, in the order shown by --help
SUBCOMMANDS = [
    "serve",
    "vcam",
    "livekit_worker",
    "render",
    "prepare_avatar",
    "prepare_data",
    "features",
    "check_weights",
    "eval_sync",
    "train_visemes",
    "distill",
    "eval_visemes",
    "eval_lipsync",
    "bench",
]


class CLIError(SyncVidError):
    """A user-caused problem: printed as one line, exit status 2."""


def optional_module(name: str):
    """Imports ``name``, or returns None when that module itself does not exist (a missing
    dependency inside it still raises)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncvid", description="Sync_ai_vid real-time lip-sync engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        mod = optional_module(f"realtime.cli.{name}")
        if mod is not None:
            mod.register(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def check_unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Rejects a misspelt ``--option`` with the usage of the (sub)command it was given to.

    argparse reports unknown options only after the whole command line parsed: a misspelt required
    option first fails as "required", and an unknown one after a subcommand is reported with the
    top-level usage. This looks at every ``--name`` before argparse does, walking down the
    subcommands (``syncvid bench realtime --x``), and names the closest real option.
    """
    current = parser
    for token in argv:
        if token == "--":
            return
        if not token.startswith("--"):
            nested = _subparser(current, token)
            if nested is not None:
                current = nested
            continue
        name = token.split("=", 1)[0]
        known = [o for o in current._option_string_actions if o.startswith("--")]
        if name in known or (current.allow_abbrev and sum(o.startswith(name) for o in known) == 1):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        current.error(f"unrecognized option {name}" + (f" (did you mean {close[0]}?)" if close else ""))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    check_unknown_options(parser, argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SyncVidError as e:
        print(f"syncvid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
