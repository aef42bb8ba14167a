"""The sqlitedict tests' folder on ``sys.path``, so that they import the helpers beside them
(:mod:`sqlitedict_procs`, the worker processes; :mod:`sqlitedict_stores`, opening a file)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
