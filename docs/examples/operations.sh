#!/usr/bin/env bash
# The operations walk-through of operations.md, run top to bottom by tests/test_docs.py in a
# directory holding sqlitedict.toml (with sessions in it) and leveldb.toml. A line ending in
# "# exit N" must exit with status N; every other line must exit with 0.

# start-migrate
sessionkeeper export before-migration.jsonl.gz --config sqlitedict.toml
sessionkeeper migrate --config sqlitedict.toml --to leveldb.toml
sessionkeeper migrate --config sqlitedict.toml --to leveldb.toml --json
sessionkeeper list --config leveldb.toml --limit 5
# end-migrate

# start-restore
sessionkeeper import before-migration.jsonl.gz --config leveldb.toml
sessionkeeper import before-migration.jsonl.gz --config leveldb.toml --strict --skip-existing
# end-restore

# start-backup
sessionkeeper backup backups --config leveldb.toml --keep 7
sessionkeeper backup backups --config leveldb.toml --keep 7 --quiet
# end-backup

# start-monitor
sessionkeeper stats --config leveldb.toml --format prometheus
# end-monitor
