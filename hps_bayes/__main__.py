"""``python -m hps_bayes``: see :mod:`hps_bayes.app`."""

from hps_bayes.app import main

if __name__ == "__main__":
    main()
