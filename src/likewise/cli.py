"""The ``likewise`` command.

Each sub-command lives in ``likewise/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function
that runs it. Bad input (a ``ValueError``/``TypeError``/``OSError`` raised while
running, Lightning's ``MisconfigurationException``, or a bad argument) prints one line
on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: sub-command modules under likewise.commands, in the order shown by --help
COMMANDS: tuple[str, ...] = ("demo", "train", "pretrain", "embed", "evaluate", "index", "serve", "stereo")
#: where Lightning defines MisconfigurationException (looked up only if already imported)
_LIGHTNING_EXCEPTIONS = ("lightning.fabric.utilities.exceptions", "lightning_fabric.utilities.exceptions")


def _is_misconfiguration(exc: BaseException) -> bool:
    """Whether ``exc`` is Lightning's MisconfigurationException (bad trainer settings).

    Lightning is not imported here: if it was never imported, the exception cannot be its.
    """
    for name in _LIGHTNING_EXCEPTIONS:
        cls = getattr(sys.modules.get(name), "MisconfigurationException", None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


class _Parser(argparse.ArgumentParser):
    """argparse parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="likewise", description="Similarity learning: train, evaluate, search.")
    from likewise import __version__

    parser.add_argument("--version", action="version", version=f"likewise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"likewise.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"likewise.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        result = args.func(args)
    except Exception as exc:
        if not isinstance(exc, (ValueError, TypeError, OSError, KeyError)) and not _is_misconfiguration(exc):
            raise
        message = str(exc).strip().splitlines()
        text = message[0] if message else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            text = f"no such file: {exc.filename}"
        sys.stderr.write(f"likewise {args.command}: error: {text}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("likewise: interrupted\n")
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
