"""Where each `stride.*` package lives: the repository's top-level folders are its layers.

The import namespace stays `stride.*` (nothing generic such as `pipelines` is installed
at the top level of site-packages); this table maps each layer's folder into it, for the
wheel and for `pip install -e .` alike. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

LAYERS = {
    "stride": "stride",  # errors, config, plots, the task interface, the training core
    "stride.architectures": "architectures",
    "stride.datamodules": "datamodules",
    "stride.lightning_modules": "lightning_modules",
    "stride.tracking": "tracking",
    "stride.registry": "registry",
    "stride.tuning": "tuning",
    "stride.benchmarking": "benchmarking",
    "stride.pipelines": "pipelines",
}

packages = [sub for package, folder in LAYERS.items()
            for sub in [package, *(f"{package}.{child}" for child in find_packages(folder))]]

setup(package_dir=LAYERS, packages=packages)
