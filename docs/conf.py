"""Sphinx configuration: MyST Markdown pages, the API and hook reference from the docstrings.

Built by ``nox -s docs`` (``sphinx-build -W``: any warning fails the build). No extension reaches
the network.
"""

from __future__ import annotations

from importlib.metadata import version as _version

project = "sessionkeeper"
author = "The sessionkeeper authors"
copyright = "the sessionkeeper authors"
release = _version("sessionkeeper")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"sessionkeeper {release}"
