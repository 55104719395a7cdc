"""``python -m hps_bayes``: see :mod:`hps_bayes.cli.app`."""

import os

# One BLAS thread per process: the fits use small matrices, where threads only cost
# (the scan parallelises over processes instead).  Users may still override these.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from hps_bayes.cli.app import main

if __name__ == "__main__":
    main()
