"""User-facing errors and the one wrapper every entry point runs under.

A user sees one line that says what was wrong and what to do, and an exit code: 2 for usage
errors (bad flag, bad config, unknown backend), 1 for the other expected failures (data, training),
130 for an interruption, and INTERNAL_ERROR (70, sysexits' EX_SOFTWARE) for a bug: an exception
nobody anticipated keeps its traceback, then the same kind of line saying what to report. A tensor
or an array inside a message is cut to its type, shape and dtype (a framework's error can hold a
whole batch). `--debug` re-raises instead, with the full traceback and message.
"""

import ast
import re
import sys
import traceback

INTERNAL_ERROR = 70  # sysexits.h EX_SOFTWARE: not 1 (an expected failure) nor 2 (usage)


class MnistKeras3Error(Exception):
    """An expected failure with a message meant for the user (one line)."""

    exit_code = 1


class UsageError(MnistKeras3Error):
    """The command line, a config file or the environment asked for something invalid."""

    exit_code = 2


class DataError(MnistKeras3Error):
    """Data could not be found, read or verified."""


class TrainingError(MnistKeras3Error):
    """Training could not go on (for example the loss diverged)."""


class Diverged(TrainingError):
    """The loss became NaN/inf: the run folder records it as "diverged" (not "failed")."""


class Interrupted(MnistKeras3Error):
    """Ctrl-C or SIGTERM: stopped cleanly, with what it takes to resume in the message."""

    exit_code = 130


# The reprs frameworks put in messages: numpy's and jax's `array(...)`/`Array(...)`, torch's
# `tensor(...)`, tensorflow's `<tf.Tensor: shape=..., dtype=..., numpy=array(...)>`.
_ARRAY_START = re.compile(r"\b(array|Array|tensor)\(")
_DTYPE = re.compile(r"dtype=([\w.]+)")


def _closing(text, start):
    """Index just past the parenthesis that closes the one opened at text[start - 1]."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _shape(data):
    """The shape of a printed nested list such as "[[1, 2], [3, 4]]" (None where numpy printed "...")."""
    if "..." in data:
        return None
    try:
        import numpy as np

        return tuple(np.array(ast.literal_eval(data)).shape)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a plain literal (nan, ...)
        return None


def brief(message):
    """`message` with every printed array or tensor cut to `<kind shape=... dtype=...>`, then
    joined into one line."""
    out, pos = [], 0
    for m in _ARRAY_START.finditer(message):
        if m.start() < pos:
            continue
        end = _closing(message, m.end())
        inside = message[m.end():end - 1]
        data = inside[: inside.rfind("]") + 1] if "]" in inside else inside
        shape, dtype = _shape(data), _DTYPE.search(inside)
        depth = len(data) - len(data.lstrip("["))  # a summarised array still shows its rank
        shape_text = str(shape) if shape is not None else "(" + ", ".join("?" * max(depth, 1)) + ")"
        out.append(message[pos:m.start()] + f"<{m.group(1)} shape={shape_text}"
                   + (f" dtype={dtype.group(1)}" if dtype else "") + ">")
        pos = end
    out.append(message[pos:])
    return " ".join("".join(out).split())


def command_name(main):
    """"train" for mnist_keras3.train.main, "parity" for mnist_keras3.parity.report.main."""
    parts = main.__module__.split(".")
    return parts[1] if parts[0] == "mnist_keras3" and len(parts) > 1 else parts[-1]


def run_cli(main, argv=None):
    """Run `main(argv)` and turn every failure into one line on stderr + an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except MnistKeras3Error as e:
        if debug:
            raise
        print(f"error: {brief(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep where it happened, say what to report
        if debug:
            raise
        name = command_name(main)
        print("Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__)).rstrip(),
              file=sys.stderr)
        print(f"error: internal error in {name}: {type(e).__name__}: {brief(str(e))}", file=sys.stderr)
        print("This is a bug in mnist-keras3. Please report it with the lines above, the command you ran, "
              "and the run folder's metrics.json if there is one (--debug shows the full traceback).",
              file=sys.stderr)
        return INTERNAL_ERROR
