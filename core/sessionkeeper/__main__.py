"""``python -m sessionkeeper``: the same CLI as the ``sessionkeeper`` command."""

from __future__ import annotations

from sessionkeeper.cli import main

if __name__ == "__main__":
    main()
