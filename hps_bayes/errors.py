"""Exception and warning types of hps_bayes.

Every error names the offending value and says how to fix it.  All errors
derive from :class:`HpsBayesError`, so a caller can catch everything the
package raises on purpose with one ``except``.
"""

from __future__ import annotations


class HpsBayesError(Exception):
    """Base class of every error hps_bayes raises on purpose."""


class InputError(HpsBayesError, ValueError):
    """Input data that cannot be analysed (missing file or histogram, bad counts, ...)."""


class ConfigError(HpsBayesError, ValueError):
    """A setting with a value that is not allowed."""


class FitError(HpsBayesError, RuntimeError):
    """A fit that could not be carried out at all."""


class HpsBayesWarning(UserWarning):
    """A valid but risky choice (e.g. a window clipped by the range end)."""
