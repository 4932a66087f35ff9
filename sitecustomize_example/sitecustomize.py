"""Explicit activation for installs where the mpsanitizer.pth line cannot be used
(the package installed outside site-packages, a policy that strips .pth files).

Put this file's folder on PYTHONPATH. It chains to any other ``sitecustomize``
further along ``sys.path``, then activates mpsanitizer when ``MPSANITIZE`` asks.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _chain_next_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or os.curdir) == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


_chain_next_sitecustomize()

if os.environ.get("MPSANITIZE", "").strip().lower() not in ("", "0", "false", "no", "off"):
    from mpsanitizer.lazy import activate_from_environment

    activate_from_environment()
