import gc
import tracemalloc

import pytest

from pa_handlers import cache, pidf, presrules
from pa_handlers.cache import ByteBoundedCache, size_of


def test_the_least_recently_used_go_first_and_the_bytes_stay_bounded():
    c = ByteBoundedCache(10_000)
    computed = []

    def value(n):
        computed.append(n)
        return "x" * 1000 + str(n)

    for n in range(30):
        c.get(n, lambda n=n: value(n))
        c.get(0, lambda: value(0))          # 0 stays in use
        assert c.bytes <= 10_000
    assert 0 < len(c) < 30 and computed.count(0) == 1
    assert c.get(29, lambda: value(-1)).endswith("29")
    assert c.get(1, lambda: value(-1)).endswith("-1")   # long gone: computed again


def test_values_larger_than_the_cache_and_failures_are_not_kept():
    c = ByteBoundedCache(1000)
    assert c.get("big", lambda: b"x" * 5000) == b"x" * 5000
    assert len(c) == 0 and c.bytes == 0
    with pytest.raises(ValueError):
        c.get("bad", lambda: int("x"))
    assert len(c) == 0
    c.resize(0)
    assert c.get("k", lambda: 1) == 1 and len(c) == 0


def test_size_of_counts_what_a_value_holds():
    rules = presrules.parse_rules(
        b'<r:ruleset xmlns:r="urn:ietf:params:xml:ns:common-policy"><r:rule id="'
        + b"i" * 5000 + b'"/></r:ruleset>')
    assert size_of(rules) > 5000
    assert size_of((("a" * 100, "b" * 100),)) > 200


HEAD = ('<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:bob@x">')


@pytest.fixture
def small_cache():
    before = cache.DOCUMENTS.max_bytes
    cache.DOCUMENTS.clear()
    cache.DOCUMENTS.resize(1024 * 1024)
    yield cache.DOCUMENTS
    cache.DOCUMENTS.clear()
    cache.DOCUMENTS.resize(before)


def test_distinct_large_documents_cost_at_most_the_cache_bytes(small_cache):
    # The hardening issue: 750 distinct 60 kB documents took a worker from
    # 1 MB to 91 MB, the caches being keyed by whole documents.  Here 300
    # aggregates, each rendered in a legacy format and through a filtered
    # view, and 300 pres-rules documents.
    def aggregate(n):
        return pidf.compose("bob@x", [pidf.parse_publication(
            (HEAD + f'<tuple id="t"><status><basic>open</basic></status><note>{n}'
             + "x" * 60000 + '</note></tuple><dm:person id="p"/></presence>').encode(), 0.5)])

    def rules(n):
        return (b'<r:ruleset xmlns:r="urn:ietf:params:xml:ns:common-policy"><r:rule id="'
                + str(n).encode() + b"i" * 60000 + b'"/></r:ruleset>')

    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for n in range(300):
            document = aggregate(n)
            pidf.render(document, "bob@x", pidf.XPIDF)
            pidf.render(document, "bob@x", pidf.LPIDF, presrules.SERVICES)
            presrules.parse_rules(rules(n))
        del document
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert small_cache.bytes <= 1024 * 1024
    print("held after 300 documents:", held)
    assert held < 2 * 1024 * 1024, held
    # What is kept is still used: the same document again is not parsed.
    again = aggregate(299)
    assert pidf.render(again, "bob@x", pidf.XPIDF) == pidf.render(again, "bob@x", pidf.XPIDF)
