#!/usr/bin/env bash
# Install sessionkeeper from a checkout (quickstart); run from the repository's root.
set -euo pipefail
# start-install
python3 -m venv .venv
.venv/bin/pip install ./ ./plugins/memory
# end-install
