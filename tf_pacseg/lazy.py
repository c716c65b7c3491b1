"""Package attributes that import their module on first use."""

import importlib


def lazy_exports(package, modules):
    """`__all__`, `__getattr__` and `__dir__` for a package whose names load on first use.

    Args:
        package: str. The package's `__name__`.
        modules: dict. {module: the public names it defines}.

    Returns:
        (`__all__`, `__getattr__`, `__dir__`) to assign in the package's `__init__`.
    """
    namespace = importlib.import_module(package).__dict__
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return sorted(exports), __getattr__, __dir__
