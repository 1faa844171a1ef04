"""How every dinodiff Python tool fails: a ToolError is printed as `error: <message>` on stderr
and the tool exits 2 (bad input or environment, nothing written), the code the dinodiff binary and
argparse use; any other exception is a bug and keeps its traceback (exit 1)."""

import sys

# Exit code for bad input (wrong file, unsupported checkpoint, missing program, ...).
EXIT_BAD_INPUT = 2


class ToolError(Exception):
    """A user-facing error: what failed, on which file, and what to do."""


def run_main(main):
    """Runs main(); a ToolError becomes `error: ...` on stderr and exit code 2."""
    try:
        main()
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
