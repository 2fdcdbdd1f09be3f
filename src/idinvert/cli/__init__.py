"""The ``idinvert`` command line: one verb per application, a thin layer over the library.

Errors a user can cause print one line (``idinvert: error: …``) and exit with status 2;
Ctrl-C exits with 130, SIGTERM with 143, both after removing any half-written output (the
signal unwinds the verb like an error). Exit status 0 means the verb finished and wrote all its output.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

from ..errors import IdinvertError
from ..fileio import write_failure
from ..version import __version__
from . import align, apps, attributes, compare, convert, demo, directions, edit, evaluate, invert, serve, train

VERBS = [convert, invert, edit, apps, align, train, evaluate, attributes, demo, serve, compare, directions]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idinvert", description="In-domain GAN inversion and real image editing.")
    parser.add_argument("--version", action="version", version=f"idinvert {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in VERBS:  # each registers its verbs (the order of `idinvert --help`)
        module.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that staging folders are removed as on Ctrl-C."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a verb runs, SIGTERM unwinds it like Ctrl-C (training runs install their own handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(), _terminate_as_interrupt():
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")
            status = args.run(args)
    except IdinvertError as exc:
        print(f"idinvert: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or quota, a read-only or failing file system, in any writer
        failure = write_failure(exc, Path(exc.filename or "the output"))
        if failure is None:
            raise
        print(f"idinvert: error: {_one_line(failure)}", file=sys.stderr)
        return 2
    except Terminated:
        print("idinvert: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("idinvert: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


def _one_line(exc: Exception) -> str:
    """The message on one line, whatever a file name or a library put into it."""
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
