"""`python -m aevb` and the `aevb` command (pyproject's script entry `aevb.__main__:run`)."""
import sys


def run() -> None:
    try:  # a Ctrl-C while the command line loads: one line, not a traceback
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("aevb: interrupted\n")
        sys.exit(130)
    sys.exit(main())


if __name__ == "__main__":
    run()
