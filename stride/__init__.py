"""stride: a training pipeline for convolutional and temporal-convolutional networks."""

__version__ = "0.1.0"


def _install_plugin_finder() -> None:
    # first thing in any process that meets a stride object: a plugin task's config unpickled in a Ray worker
    # names its class by the plugin file's module (stride.plugins)
    from stride.plugins import install_plugin_finder

    install_plugin_finder()


_install_plugin_finder()
