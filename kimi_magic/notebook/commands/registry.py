"""The one grammar of the magics: each command declares its arguments and help once; the same
declaration parses what the user typed (split like a shell, see ``split``) and prints
``%kimi help``, ``%kimi?`` and ``%%kimi?``.

>>> g = Grammar("%kimi snapshot", [arg("label", nargs="?")], "Save the context.")
>>> g.parse('"before big change"').label
'before big change'
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError


@dataclass(frozen=True)
class Arg:
    """One argparse argument: ``arg("--out", help="...")`` is ``add_argument("--out", ...)``."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which at most one may be given (``--keep-rounds N | --keep-tokens N``)."""

    args: tuple[Arg, ...]


def arg(*flags: str, **options: Any) -> Arg:
    """Declare an argument as ``ArgumentParser.add_argument`` takes it; ``help`` is plain text
    (a ``%`` is a percent sign, not a format)."""
    if "help" in options:
        options["help"] = options["help"].replace("%", "%%")
    return Arg(flags, options)


def one_of(*args: Arg) -> OneOf:
    """Declare mutually exclusive arguments."""
    return OneOf(args)


def dollars(text: str) -> float:
    """An amount in US dollars as users type one: ``0.5``, ``$2``, ``2.50$``; 0 or more.

    >>> dollars("$2"), dollars("0.5"), dollars("1.25$")
    (2.0, 0.5, 1.25)
    """
    value = float(text.strip().strip("$").replace(",", ""))
    if not value >= 0:  # also refuses nan
        raise ValueError(text)
    return value


QUOTES = "'\""


def split(line: str) -> list[str]:
    """Split ``line`` into words the way a POSIX shell does for what notebooks type.

    Quotes group words and are removed, as in a shell, where they open a word or an option's
    value (``"my frame"``, ``--out="a b"``, ``''`` is an empty word). A quote inside a word is
    part of a Python expression and stays (``df['city']``; an apostrophe too, as in
    ``don't``), and backslashes stay as typed (Windows paths, regexes). A quote opening a word
    and never closed is a ``ValueError``.

    >>> split('''--prefix "{" --system '' --map df['my col'] --as="a b"''')
    ['--prefix', '{', '--system', '', '--map', "df['my col']", '--as=a b']
    """
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return words
        word = ""
        unquote = line[i] in QUOTES
        while i < n and not line[i].isspace():
            c = line[i]
            if c not in QUOTES:
                word += c
                i += 1
                continue
            end = line.find(c, i + 1)
            unquote = unquote or (word.startswith("-") and word.endswith("="))
            if end < 0 and not unquote:
                word += c  # an apostrophe in a word: fix don't use loops
                i += 1
                continue
            if end < 0:
                raise ValueError("No closing quotation")
            word += line[i + 1:end] if unquote else line[i:end + 1]
            i = end + 1
        words.append(word)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``UsageError`` line instead of exiting."""

    #: What each positional argument is, to say what is missing in the user's words.
    explain: dict[str, str]
    #: Where the full help is: ``%kimi help pin`` or ``%%kimi?``.
    more: str

    def error(self, message: str) -> None:  # type: ignore[override]
        missing = message.partition("the following arguments are required: ")[2]
        if missing:
            message = "; ".join(f"missing {m}: {self.explain.get(m, m)}"
                                for m in missing.split(", "))
        usage = " ".join(self.format_usage().split()[1:])
        where = f"usage: {usage}" if len(usage) <= 60 else f"{self.more} explains it"
        raise UsageError(f"{self.prog}: {message} ({where})")


class Grammar:
    """What one magic or subcommand accepts, and its help, from one declaration."""

    def __init__(self, prog: str, args: Sequence[Arg | OneOf], help: str) -> None:
        self.prog = prog
        self.args = list(args)
        self.help = " ".join(help.split("\n\n")[0].split()) if help else ""
        self.description = help.strip()
        self.parser = _Parser(prog=prog, description=self.description, add_help=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self.parser.explain = {}
        self.parser.more = (f"%kimi help {prog.split()[1]}" if prog.startswith("%kimi ")
                            else f"{prog}?")
        for item in self.args:
            if isinstance(item, OneOf):
                group = self.parser.add_mutually_exclusive_group()
                for a in item.args:
                    group.add_argument(*a.flags, **a.options)
            else:
                action = self.parser.add_argument(*item.flags, **item.options)
                if not action.option_strings:
                    shown = action.metavar or action.dest
                    self.parser.explain[shown] = (action.help or "").replace("%%", "%")

    def parse(self, line: str) -> argparse.Namespace:
        """Split ``line`` (see ``split``) and parse it; a mistake is one UsageError line."""
        try:
            argv = split(line)
        except ValueError as err:
            raise UsageError(f"{self.prog}: {str(err).lower()} in {line.strip()!r}: close the "
                             "quote (or quote text containing an apostrophe with \")") from None
        return self.parser.parse_args(argv)

    def usage(self) -> str:
        """The one-line usage, e.g. ``%kimi pin [--as NAME] TARGET``."""
        return self.parser.format_usage().strip()[len("usage: "):]

    def full_help(self) -> str:
        """Usage, description and every argument with its help."""
        return self.parser.format_help().strip()


@dataclass
class Command:
    """A ``%kimi`` subcommand: its grammar, the function that runs it and its group."""

    name: str
    grammar: Grammar
    run: Callable[[Any, argparse.Namespace], Any]
    group: str


#: Every ``%kimi`` subcommand by name.
COMMANDS: dict[str, Command] = {}

#: The order ``%kimi help`` lists the groups (modules) in.
GROUPS = ("info", "context", "branching", "pins", "sessions", "tools", "batches")


def ordered() -> list[Command]:
    """The subcommands grouped as the help lists them, each group in declaration order."""
    rank = {g: i for i, g in enumerate(GROUPS)}
    return sorted(COMMANDS.values(), key=lambda c: rank.get(c.group, len(GROUPS)))


def command(name: str, *args: Arg | OneOf) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(magic, args)`` as ``%kimi NAME``; its docstring is the command's help."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        grammar = Grammar(f"%kimi {name}", args, inspect.cleandoc(fn.__doc__ or ""))
        COMMANDS[name] = Command(name, grammar, fn, fn.__module__.rsplit(".", 1)[-1])
        return fn

    return register
