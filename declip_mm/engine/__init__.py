from . import hooks, schedulers  # noqa: F401
