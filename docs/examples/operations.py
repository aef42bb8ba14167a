"""Operations from inside an application (operations.md): migrating a memory store, whose
sessions no other process can see, and serving Prometheus metrics."""

import http.client

from sessionkeeper import SessionManager
from sessionkeeper.metrics import start_metrics_server
from sessionkeeper.transfer import migrate_sessions

# start-in-process
with SessionManager(backend="memory") as sessions:  # the running application's store
    sessions.create(metadata={"user_id": "user_456"})
    sessions.create(timeout_ms=None, metadata={"user_id": "user_789"})

    # Before restarting on a sqlitedict config, copy the live sessions to its file.
    disk_opts = {"file_path": "data/sessions.sqlite", "auto_save": 0}
    with SessionManager(backend="sqlitedict", backend_opts=disk_opts) as disk:
        report = migrate_sessions(sessions, disk)
    assert report.verified, report
    print(f"copied {report.copied} sessions, digest {report.target_digest}")
# end-in-process

# start-metrics
with SessionManager(backend="memory", stats=True) as sessions:
    server = start_metrics_server(sessions, port=0)  # 0: any free port; in production e.g. 9464
    sessions.create()
    scrape = http.client.HTTPConnection(server.address)  # what Prometheus does
    scrape.request("GET", "/metrics")
    text = scrape.getresponse().read().decode()
    scrape.close()
    assert "sessionkeeper_sessions_created_total" in text
    server.close()
# end-metrics
