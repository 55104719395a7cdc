"""Build hook: ships the top-level ``conf/`` folder inside the wheel as ``hps_bayes/conf``.

Everything else about the package is declared in ``pyproject.toml``.  The Hydra config
groups stay at the repository's top level (``conf/``) for people working in the source
tree; an installed package reads them from ``hps_bayes/conf`` (``hps_bayes.physics.presets.CONF_DIR``).
"""

from pathlib import Path

from setuptools import find_packages, setup

CONF = Path(__file__).resolve().parent / "conf"
CONF_PACKAGES = sorted(
    ".".join(("hps_bayes.conf", *folder.relative_to(CONF).parts)).rstrip(".")
    for folder in [CONF, *CONF.rglob("*")] if folder.is_dir() and folder.name != "__pycache__"
)

setup(
    packages=[*find_packages(include=["hps_bayes", "hps_bayes.*"]), "hps_bayes.data", *CONF_PACKAGES],
    package_dir={"hps_bayes.conf": "conf"},
)
