"""Optional dependencies (pip extras): import one, or fail with a message that names the extra."""
from __future__ import annotations

import importlib

from .errors import MissingDependencyError

PEPTIDES_HINT = "pip install diffsampler[peptides]"


def require(module: str, hint: str = PEPTIDES_HINT):
    """Import `module`, or raise MissingDependencyError saying how to install it (`hint`)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"this needs the optional dependency {module!r} ({e}); "
                                     f"install it with: {hint}") from None


__all__ = ["require", "PEPTIDES_HINT"]
