"""``python -m hps_bayes``: see :mod:`hps_bayes.cli.app`."""

import atexit
import os
import sys

# One BLAS thread per process: the fits use small matrices, where threads only cost
# (the scan parallelises over processes instead).  Users may still override these.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# numba's extension entry points (awkward's) are not needed by the package's processes: see
# hps_bayes.model.compiled.  HPS_BAYES_NUMBA_EXTENSIONS=on loads them.
os.environ.setdefault("HPS_BAYES_NUMBA_EXTENSIONS", "off")

from hps_bayes.cli import app


def _exit_status(exc: SystemExit) -> int:
    """The status ``sys.exit(code)`` ends a process with: 0 for None, the number, else 1 (text printed)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main() -> None:
    """Run the command line (:func:`hps_bayes.cli.app.main`), then end the process at once.

    A finished command has written its files and logs; what is left is the interpreter's
    teardown, which frees the compiled PyTensor/numba graphs and every module one object at a
    time (0.5-1 s, a sixth of a one-mass run).  The exit handlers (log files, temporary
    folders, child processes) run and the output streams are flushed first, and the process
    ends with the command's exit status.  An uncaught exception leaves the usual way.
    """
    try:
        app.main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except KeyboardInterrupt:  # Ctrl-C: no traceback; what was finished is on disk
        print("\ninterrupted (Ctrl-C): the mass points finished so far are kept in the run folder and reused when "
              "the same command runs again", file=sys.stderr)
        status = 130
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
