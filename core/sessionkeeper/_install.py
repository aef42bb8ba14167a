"""How to install a backend, in words that work today.

No sessionkeeper distribution is on the package index yet: ``pip install sessionkeeper-zmq``
fails, and what works is installing the plugin's folder from a checkout of the repository. The
hints the CLI and the demo print say both: the folder to install now, and the name it will have
once published.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHECKOUT_FOLDERS", "install_advice"]

#: Where each backend of this repository lives, relative to the repository's root.
CHECKOUT_FOLDERS: Final = {
    "memory": "plugins/memory",
    "sqlitedict": "plugins/sqlitedict",
    "zmq": "plugins/zmq",
    "leveldb": "contrib/leveldb",
    "redis": "contrib/redis",
}


def install_advice(name: str) -> str:
    """The ``pip install`` that adds backend ``name``: its folder in a checkout of this
    repository (once published, its distribution ``sessionkeeper-<name>``); for a backend of
    another project, the distribution its name gives by the naming convention."""
    distribution = f"sessionkeeper-{name}"
    folder = CHECKOUT_FOLDERS.get(name)
    if folder is None:
        return f"pip install {distribution} (the distribution the naming convention gives)"
    return (
        f"pip install ./{folder} from the root of a sessionkeeper checkout "
        f"(once published: pip install {distribution})"
    )
