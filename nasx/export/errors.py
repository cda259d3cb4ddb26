"""The error of an export that cannot be done, and the check for the optional dependencies."""
from __future__ import annotations

import importlib

__all__ = ["ExportError", "INSTALL_HINT", "require"]

INSTALL_HINT = "pip install nasx[export]"


class ExportError(ValueError):
    """A detector, or a part of it, that cannot be exported to ONNX; the message says what and why."""


def require(*modules: str):
    """Import the named optional modules (``onnx``, ``onnxscript``, ``onnxruntime``); an ``ImportError``
    naming the missing ones and the install command otherwise. Returns the modules in order."""
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export and ONNX Runtime need {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")
    return found[0] if len(found) == 1 else tuple(found)
