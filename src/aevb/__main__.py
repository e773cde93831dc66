"""`python -m aevb` and the `aevb` command: a process that is all aevb's. Before anything
imports torch it applies the process-wide speed settings (`aevb.runtime.prepare_process`:
the OpenMP spin count, which libgomp reads only when torch loads, and glibc's malloc
thresholds; AEVB_NO_TUNING=1 skips them), then runs the command line. A Ctrl-C while the
command line loads is one line, not a traceback."""
import sys


def main(argv=None) -> int:
    try:
        from . import runtime
        runtime.prepare_process()
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("aevb: interrupted\n")
        return 130
    return cli_main(argv)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
