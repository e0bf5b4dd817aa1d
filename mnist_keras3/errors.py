"""User-facing errors and the one wrapper every entry point runs under.

A user sees one line that says what was wrong and what to do, and an exit code:
2 for usage errors (bad flag, bad config, unknown backend), 1 for everything else.
`--debug` shows the traceback too.
"""

import sys


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


class Interrupted(MnistKeras3Error):
    """Ctrl-C or SIGTERM: stopped cleanly, with what it takes to resume in the message."""

    exit_code = 130


def run_cli(main, argv=None):
    """Run `main(argv)` and turn expected failures into one line on stderr + an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except MnistKeras3Error as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
