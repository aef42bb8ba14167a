#!/usr/bin/env bash
# The CLI examples of cli.md, run by tests/test_docs.py in a directory holding the
# sessionkeeper.toml of docs/examples. A line ending in "# exit N" must exit with status N; every
# other line must exit with 0.

# start-backends
sessionkeeper backends
sessionkeeper backends --json
# end-backends

# start-list
sessionkeeper list
sessionkeeper list --limit 20 --config sessionkeeper.toml
sessionkeeper --config sessionkeeper.toml list --limit 20  # the same: options before the command
sessionkeeper list --json
# end-list

# start-show
sessionkeeper show 4Zq0r9xwT-not-stored --json  # exit 1: no live session has this id
sessionkeeper show "not a valid id"  # exit 2: ids are visible ASCII, no spaces
# end-show

# start-delete
sessionkeeper delete 4Zq0r9xwT-not-stored  # exit 1: nothing to delete
# end-delete

# start-cleanup
sessionkeeper cleanup
sessionkeeper cleanup --json
# end-cleanup

# start-stats
sessionkeeper stats
SESSIONKEEPER_CONFIG=sessionkeeper.toml sessionkeeper stats --json
sessionkeeper stats --format prometheus
# end-stats

# start-check
sessionkeeper check
sessionkeeper check --json
# end-check

# start-export
sessionkeeper export sessions.jsonl  # exit 3: the memory backend is per process: nothing to see
sessionkeeper export --help
# end-export

# start-import
sessionkeeper import sessionkeeper.toml  # exit 5: a config file is not an export file
sessionkeeper import missing.jsonl.gz  # exit 2: FILE must exist
# end-import

# start-migrate
sessionkeeper migrate --to sessionkeeper.toml  # exit 2: --to names the same store
sessionkeeper migrate --help
# end-migrate

# start-backup
sessionkeeper backup backups --keep 7  # exit 3: memory is per process; use a persistent backend
# end-backup

# start-node
sessionkeeper node keygen --dir keys --name a  # writes keys/a.key and keys/a.key_secret
sessionkeeper node --help
# end-node

# start-new-backend
sessionkeeper new-backend mystore
sessionkeeper new-backend "My Store"  # exit 2: lowercase letters and digits, no spaces
# end-new-backend

# start-errors
sessionkeeper list --config missing.toml  # exit 3: an explicitly named file must exist
# end-errors
