from lxml import etree

from pa_handlers import winfo
from pa_handlers.winfo import Limits, WatcherEntry

NS = winfo.WINFO_NS


def entry(n, uri="sip:w@x", status="pending", display=""):
    return WatcherEntry(f"w{n}", uri, status, "subscribe", display, 60)


def listed(text):
    return [(w.get("id"), w.get("display-name")) for w in
            etree.fromstring(text.encode()).iter(f"{{{NS}}}watcher")]


def test_one_watcher_gets_at_most_its_entries_and_short_display_names():
    entries = [entry(n, display="D" * 300) for n in range(5)] + [entry(9, "sip:v@x", display="Vé")]
    text = winfo.document("p@x", 0, True, entries, Limits(3, 10, 49152), package="presence")
    assert listed(text) == [("w0", "D" * 10), ("w1", "D" * 10), ("w2", "D" * 10), ("w9", "Vé")]


def test_a_list_over_the_bytes_keeps_pending_watchers_first_and_fits_at_the_limit():
    entries = [entry(n, f"sip:w{n}@x", "active" if n % 2 else "pending") for n in range(40)]
    whole = winfo.document("p@x", 0, True, entries, Limits(8, 64, 1 << 20), package="presence")
    limits = Limits(8, 64, len(whole.encode()))
    assert winfo.document("p@x", 0, True, entries, limits, package="presence") == whole
    cut = winfo.document("p@x", 0, True, entries, Limits(8, 64, len(whole.encode()) - 1),
                         package="presence")
    assert len(cut.encode()) < len(whole.encode())
    # The one left out is the last active watcher; order is kept.
    assert [i for i, _ in listed(cut)] == [f"w{n}" for n in range(39)]
    small = winfo.document("p@x", 0, True, entries, Limits(8, 64, 1500), package="presence")
    ids = [i for i, _ in listed(small)]
    assert len(small.encode()) <= 1500 and ids
    assert all(int(i[1:]) % 2 == 0 for i in ids)    # pending only
    assert ids == sorted(ids, key=lambda i: int(i[1:]))
