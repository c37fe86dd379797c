"""The ``sturdynet`` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Errors a user can fix (bad recipe, missing file, bad argument) print one line and
exit with 2; any other failure prints one line and exits with 1 (``--debug`` shows
the traceback). Global options (``--debug``, ``-q``) go before or after the subcommand;
a closed output pipe (``sturdynet list | head``) ends the command quietly with 0.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

# OpenMP worker threads that spin while waiting steal the cores other processes need; on a
# busy machine that slowed the default run several-fold (issue 18, BENCHMARKS.md). libgomp
# reads the policy once, when torch loads it, so it is set here, before anything imports
# torch, and only when the user has not chosen one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..core.names import first_line, os_error_text  # noqa: E402
from ..core.params import ConfigError

COMMANDS = ["run", "validate", "train", "evaluate", "export", "report", "list", "compare"]


def _modules():
    return [importlib.import_module(f"{__name__}.{c}") for c in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="sturdynet", description="Compress image classifiers and tell the truth "
                                "about their robustness.")
    p.add_argument("--version", action="version", version=f"sturdynet {__version__}")
    _global_options(p, False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _modules():
        mod.add_parser(sub)
    for sp in sub.choices.values():  # global options also after the subcommand: `run r.yaml -q`
        _global_options(sp, argparse.SUPPRESS)
    return p


def _global_options(p: argparse.ArgumentParser, default) -> None:
    """``--debug`` and ``-q``; on subcommands with a suppressed default, so that they do not
    reset a value given before the subcommand."""
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress display")


def _quiet_pipe_exit() -> int:
    """stdout's reader went away (``sturdynet list | head``): stop without a traceback, and
    point stdout at /dev/null so the interpreter's final flush does not complain either."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        return _quiet_pipe_exit()
    except (ConfigError, ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"sturdynet: error: {first_line(e, 400)}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only or missing output folder: the user's environment
        if args.debug:
            raise
        print(f"sturdynet: error: {os_error_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sturdynet: interrupted (finished results are kept; run again to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line instead of a traceback
        if args.debug:
            raise
        print(f"sturdynet: error: {type(e).__name__}: {first_line(e, 400)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
