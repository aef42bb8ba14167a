#!/usr/bin/env bash
# From an empty folder to a tested, published plugin (writing-a-backend.md). tests/test_authoring.py
# checks this list of commands and performs each step: the generator, the installation, the test
# run, the listing and the build.

# start-new
sessionkeeper new-backend mystore             # writes ./sessionkeeper-mystore
cd sessionkeeper-mystore
python -m pip install -e . pytest hypothesis  # entry points exist only once installed
python -m pytest                              # the conformance kit passes as generated
sessionkeeper backends                        # lists mystore, from sessionkeeper-mystore
# end-new

# start-publish
python -m pip install build twine
python -m build                               # dist/*.whl and dist/*.tar.gz
python -m twine check dist/*
python -m twine upload dist/*                 # to PyPI, as sessionkeeper-mystore
# end-publish
