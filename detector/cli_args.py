"""Argument parsing shared by every ``revet`` command line. Torch-free.

Exit statuses: 0 done; 1 the job could not start or failed (bad model, options, files);
2 a batch finished but some inputs could not be read (listed in its summary);
``EXIT_USAGE`` (64, ``EX_USAGE`` of sysexits.h) the command line itself is wrong, so a
script can tell a typo from lost inputs.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 64


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors exit with :data:`EXIT_USAGE` instead of 2
    (subcommand parsers inherit the class)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
