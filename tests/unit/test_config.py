import pytest

from pa_handlers import metrics
from pa_handlers.config import ConfigError, load_settings, settings_from_mapping

URL = "mysql://pa:secret@db.example.org:3307/presence"


def test_defaults_are_sers():
    s = settings_from_mapping({"db_url": URL})
    assert (s.default_expires, s.default_priority_percentage, s.max_subscription_expiration,
            s.max_publish_expiration, s.timer_interval, s.auth, s.winfo_auth) == \
        (3600, 50, 3600, 3600, 10, "implicit", "implicit")
    assert s.default_priority == 0.5
    # Not SER's: the gauges count whole tables, so once a minute.
    assert s.gauges_interval == 60


def test_limits_have_safe_defaults():
    s = settings_from_mapping({"db_url": URL})
    assert (s.max_publication_elements, s.max_publications, s.max_document_bytes,
            s.cache_bytes, s.max_winfo_entries_per_watcher, s.max_display_name,
            s.notify_udp_mtu) == (32, 16, 49152, 4 * 1024 * 1024, 8, 64, 65507)


def test_db_url_is_parsed():
    url = settings_from_mapping({"db_url": "mysql://u%40x:p%3Aw@h:3310/d"}).db_url
    assert (url.user, url.password, url.host, url.port, url.database) == ("u@x", "p:w", "h", 3310, "d")
    assert "p:w" not in url.redacted()


def test_db_url_may_name_several_hosts_tried_in_order():
    url = settings_from_mapping({"db_url": "mysql://u:p@g1:3307,g2,[::1]:3309/d"}).db_url
    assert url.servers == (("g1", 3307), ("g2", 3306), ("::1", 3309))
    assert (url.host, url.port) == ("g1", 3307)
    assert url.redacted() == "mysql://u:***@g1:3307,g2:3306,::1:3309/d"
    one = settings_from_mapping({"db_url": "mysql://u:p@g1/d"}).db_url
    assert one.servers == (("g1", 3306),) and one.hosts == ()


def test_db_sync_wait_is_off_unless_set():
    assert settings_from_mapping({"db_url": URL}).db_sync_wait == 0
    assert settings_from_mapping({"db_url": URL, "db_sync_wait": 7}).db_sync_wait == 7


@pytest.mark.parametrize("data, key", [
    ({"db_url": URL, "colour": "blue"}, "colour"),
    ({"db_url": URL, "default_expires": "soon"}, "default_expires"),
    ({"db_url": URL, "default_expires": True}, "default_expires"),
    ({"db_url": URL, "default_priority_percentage": 150}, "default_priority_percentage"),
    ({"db_url": URL, "auth": "sometimes"}, "auth"),
    ({"db_url": URL, "winfo_auth": "xcap"}, "winfo_auth"),
    ({"db_url": URL, "timer_interval": 0}, "timer_interval"),
    ({"db_url": URL, "gauges_interval": 0}, "gauges_interval"),
    ({"db_url": URL, "ignore_408_on_notify": "yes"}, "ignore_408_on_notify"),
    ({"db_url": "postgres://x@y/z"}, "db_url"),
    ({"db_url": "mysql://x@y"}, "db_url"),
    ({"db_url": "mysql://x@a:1,b:x/d"}, "db_url"),
    ({"db_url": "mysql://x@a:1,,b/d"}, "db_url"),
    ({"db_url": URL, "db_sync_wait": 16}, "db_sync_wait"),
    ({}, "db_url"),
    ({"db_url": URL, "min_expires": 7200, "max_subscription_expiration": 3600}, "min_expires"),
    ({"db_url": URL, "max_publication_elements": 0}, "max_publication_elements"),
    ({"db_url": URL, "max_publications": 0}, "max_publications"),
    ({"db_url": URL, "max_document_bytes": 1000}, "max_document_bytes"),
    ({"db_url": URL, "cache_bytes": -1}, "cache_bytes"),
    ({"db_url": URL, "max_winfo_entries_per_watcher": 0}, "max_winfo_entries_per_watcher"),
    ({"db_url": URL, "max_display_name": 129}, "max_display_name"),
    ({"db_url": URL, "notify_udp_mtu": 70000}, "notify_udp_mtu"),
])
def test_bad_settings_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        settings_from_mapping(data)
    assert key in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(str(tmp_path / "nope.yaml"))


def test_no_path():
    with pytest.raises(ConfigError, match="PA_CONFIG"):
        load_settings(None)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = tmp_path / "pa.yaml"
    path.write_text("db_url: x\nauth: [none\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(str(path))


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "pa.yaml"
    path.write_text(f"db_url: {URL}\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"pa\.yaml: unknown key 'bogus'"):
        load_settings(str(path))


@pytest.mark.parametrize("data, key", [
    ({"xcap_nonce_secret": "short"}, "xcap_nonce_secret"),
    ({"xcap_nonce_secret": 12345678901234567}, "xcap_nonce_secret"),
    ({"metrics_sources": "127.0.0.1"}, "metrics_sources"),
    ({"metrics_sources": ["localhost"]}, "metrics_sources"),
    ({"xcap_document_path": "/xcap root/{xui}"}, "xcap_document_path"),
    ({"xcap_document_path": "/x?y={xui}"}, "xcap_document_path"),
])
def test_bad_xcap_and_metrics_settings_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        settings_from_mapping({"db_url": URL, **data})
    assert key in str(e.value)


def test_metrics_go_to_loopback_unless_told_otherwise():
    default = settings_from_mapping({"db_url": URL}).metrics_sources
    assert metrics.source_allowed(default, "127.0.0.1")
    assert metrics.source_allowed(default, "::1")
    assert metrics.source_allowed(default, "[::ffff:127.0.0.1]")
    assert not metrics.source_allowed(default, "127.0.0.2")
    assert not metrics.source_allowed(default, "192.0.2.7")
    assert not metrics.source_allowed(default, "")
    chosen = settings_from_mapping({"db_url": URL, "metrics_sources": ["10.1.0.0/16", "::1"]})
    assert metrics.source_allowed(chosen.metrics_sources, "10.1.200.3")
    assert not metrics.source_allowed(chosen.metrics_sources, "127.0.0.1")
    assert settings_from_mapping({"db_url": URL, "metrics_sources": []}).metrics_sources == ()


def test_backend_subscriptions_are_off_unless_local_domains_are_named():
    s = settings_from_mapping({"db_url": URL})
    assert s.local_domains == () and s.is_local("anywhere.example")
    s = settings_from_mapping({"db_url": URL, "local_domains": ["A.example"],
                               "backend_routes": {"b.example": "127.0.0.1:5071"}})
    assert s.is_local("a.EXAMPLE") and not s.is_local("b.example")
    assert s.backend_next_hop("B.example") == "sip:127.0.0.1:5071"
    assert s.backend_next_hop("c.example") == ""


@pytest.mark.parametrize("data, key", [
    ({"backend_routes": ["b.example"]}, "backend_routes"),
    ({"backend_routes": {"b.example": "nohost"}}, "backend_routes"),
    ({"local_domains": "a.example"}, "local_domains"),
    ({"backend_retry_min": 10, "backend_retry_max": 5}, "backend_retry_min"),
])
def test_bad_backend_settings_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        settings_from_mapping({"db_url": URL, **data})
