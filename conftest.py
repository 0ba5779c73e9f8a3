"""Repository-wide pytest settings: doctests of the library run with the suite.

The framework adapters import their framework at module level; their doctests (and modules) are
skipped where the optional package is not installed.
"""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("lightning") is None:
    collect_ignore_glob.append("hessian_lr/integrations/lightning.py")
if importlib.util.find_spec("transformers") is None:
    collect_ignore_glob.append("hessian_lr/integrations/transformers.py")
