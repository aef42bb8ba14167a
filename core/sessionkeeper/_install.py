"""How to install a backend, in words that work today.

No sessionkeeper distribution is on the package index yet: ``pip install sessionkeeper-zmq``
fails, and what works is installing the plugin's folder from a checkout of the repository. The
hints the CLI and the demo print say both: the folder to install now, and the name it will have
once published.
"""

from __future__ import annotations

from typing import Final

from ._errors import KNOWN_BACKENDS, install_hint

__all__ = ["CHECKOUT_FOLDERS", "install_advice"]

#: Where each backend of this repository lives, relative to the repository's root.
CHECKOUT_FOLDERS: Final = {name: folder for name, (_, folder) in KNOWN_BACKENDS.items()}


def install_advice(name: str) -> str:
    """How to add backend ``name``: for one of this repository, its folder in a checkout (and,
    once published, its distribution), worded as :func:`~sessionkeeper._errors.install_hint`
    words it in errors; for any other, no distribution name made up from the input, only where
    to look."""
    hint = install_hint(name)
    if hint is None:
        return (
            "install the distribution that provides it (it declares an entry point in group "
            '"sessionkeeper.backends")'
        )
    return hint
