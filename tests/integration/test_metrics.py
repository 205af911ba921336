"""The plugin's statistics read back through Kamailio: `kamcmd
stats.get_statistics` (module ctl) and Prometheus (xhttp_prom) of
kamailio.cfg.sample."""

import http.client
import urllib.request

from helpers import pidf_body, wait_until
from pa_handlers import metrics
from sipua import SipUA


def stats(kamailio) -> dict[str, int]:
    values = {}
    for line in kamailio.rpc("stats.get_statistics", "script:").splitlines():
        name, _, value = line.partition(" = ")
        values[name.removeprefix("script:")] = int(value)
    return values


def grown(before, after, name) -> int:
    return after[name] - before[name]


def test_every_statistic_is_declared(kamailio):
    assert sorted(stats(kamailio)) == sorted(metrics.names())


def test_requests_are_counted_by_method_and_answer(kamailio, ua, presentity):
    before = stats(kamailio)
    r, d = ua.subscribe(presentity)
    assert r.status == 200
    ua.wait_notify(d.call_id)
    assert ua.request("SUBSCRIBE", presentity, [("Event", "conference")]).status == 489
    r = ua.request("PUBLISH", presentity, [("Event", "presence"),
                                           ("Content-Type", "application/pidf+xml")],
                   pidf_body(presentity, "t1", "open"))
    assert r.status == 200
    ua.wait_notify(d.call_id, count=2)
    after = wait_until(lambda: (lambda s: s if grown(before, s, "pa_notify_ok") >= 2 else None)(
        stats(kamailio)))
    assert grown(before, after, "pa_subscribe_requests") == 2
    assert grown(before, after, "pa_subscribe_200") == 1
    assert grown(before, after, "pa_subscribe_489") == 1
    assert grown(before, after, "pa_publish_requests") == 1
    assert grown(before, after, "pa_publish_200") == 1
    assert grown(before, after, "pa_notify_sent") == 2
    assert grown(before, after, "pa_subscribe_us") > 0
    assert grown(before, after, "pa_publish_us") > 0


def test_failed_and_unanswered_notifies_are_counted(kamailio, presentity):
    before = stats(kamailio)
    gone = SipUA(kamailio.address, user="gone")
    silent = SipUA(kamailio.address, user="silent")
    try:
        gone.notify_answer = lambda m: 481 if m.cseq[0] > 1 else 200
        silent.notify_answer = lambda m: None if m.cseq[0] > 1 else 200
        dialogs = []
        for ua in (gone, silent):
            r, d = ua.subscribe(presentity)
            assert r.status == 200
            ua.wait_notify(d.call_id)
            dialogs.append(d)
        gone.request("PUBLISH", presentity, [("Event", "presence"),
                                             ("Content-Type", "application/pidf+xml")],
                     pidf_body(presentity, "t1", "open"))
        # notify_timeout is 3 s in the test settings.
        after = wait_until(lambda: (lambda s: s if grown(before, s, "pa_notify_unanswered")
                                    else None)(stats(kamailio)), timeout=10)
        assert grown(before, after, "pa_notify_failed_481") == 1
        assert grown(before, after, "pa_notify_unanswered") == 1
    finally:
        gone.close()
        silent.close()


def test_gauges_follow_the_database(kamailio, database, ua, presentity):
    def active_in_database():
        return database.query("SELECT COUNT(*) FROM pa_subscription WHERE event = 'presence'"
                              " AND status = 'active' AND expires_at > UNIX_TIMESTAMP()")[0][0]

    r, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    ua.request("PUBLISH", presentity, [("Event", "presence"),
                                       ("Content-Type", "application/pidf+xml")],
               pidf_body(presentity, "t1", "open"))
    wait_until(lambda: stats(kamailio)["pa_publications"] >= 1)
    wait_until(lambda: stats(kamailio)["pa_subscriptions_active"] == active_in_database() > 0)
    before = active_in_database()
    assert ua.resubscribe(d, 0).status == 200
    assert active_in_database() == before - 1
    wait_until(lambda: stats(kamailio)["pa_subscriptions_active"] == before - 1)


def test_every_package_has_its_gauges(kamailio, database, ua, presentity):
    def in_database(table, event):
        return database.query(f"SELECT COUNT(*) FROM {table} WHERE event = %s"
                              " AND expires_at > UNIX_TIMESTAMP()", (event,))[0][0]

    r, d = ua.subscribe(presentity, event="message-summary")
    ua.wait_notify(d.call_id)
    ua.request("PUBLISH", presentity, [("Event", "message-summary"),
                                       ("Content-Type", "application/simple-message-summary")],
               b"Messages-Waiting: yes\r\n")
    wait_until(lambda: stats(kamailio)["pa_subscriptions_message_summary"] ==
               in_database("pa_subscription", "message-summary") > 0)
    wait_until(lambda: stats(kamailio)["pa_publications_message_summary"] ==
               in_database("pa_publication", "message-summary") > 0)
    assert {"pa_subscriptions_dialog", "pa_publications_dialog", "pa_subscriptions_reg",
            "pa_publications_reg"} <= set(stats(kamailio))


def test_prometheus_reads_them_at_metrics(kamailio, ua, presentity):
    ua.subscribe(presentity)
    with urllib.request.urlopen(f"http://127.0.0.1:{kamailio.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = dict(line.split(" ")[:2] for line in text.splitlines()
                  if line.startswith("kamailio_script_pa_"))
    assert int(values["kamailio_script_pa_subscribe_requests"]) >= 1
    assert "kamailio_script_pa_subscriptions_active" in values


def test_metrics_are_only_for_the_configured_sources(kamailio):
    """/metrics shares the port XCAP clients reach: by default only
    127.0.0.1 and ::1 read it (127.0.0.2 is loopback too, but not listed)."""
    def get(source):
        conn = http.client.HTTPConnection(*kamailio.address, timeout=5,
                                          source_address=(source, 0))
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
    status, body = get("127.0.0.2")
    assert status == 403 and b"kamailio_script_pa_" not in body
    assert get("127.0.0.1")[0] == 200
