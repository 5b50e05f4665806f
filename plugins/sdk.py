"""The plugin SDK module (plugins/guest/harvester_plugin.py) as the node process sees it.

The same file is baked into the sandbox component; natively it is loaded from its path and
registered as the top-level module `harvester_plugin`, which is what plugin files import.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

SDK_PATH = Path(__file__).resolve().parent / "guest" / "harvester_plugin.py"
MODULE = "harvester_plugin"
_lock = threading.Lock()


def load_sdk() -> ModuleType:
    """The SDK module, loaded once per process."""
    with _lock:
        module = sys.modules.get(MODULE)
        if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == SDK_PATH:
            return module
        spec = importlib.util.spec_from_file_location(MODULE, SDK_PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
        return module
