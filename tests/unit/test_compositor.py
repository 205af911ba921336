import logging

import pytest

from pa_handlers import pidf
from pa_handlers.config import settings_from_mapping
from pa_handlers.presence import PRESENCE_DOCUMENTS
from pa_handlers.records import StoredPublication

NS = pidf.PIDF_NS


def composer(presentity, settings, refuse=False):
    """The compositor's composition of the presence package."""
    return lambda stored: PRESENCE_DOCUMENTS.compose(
        presentity, [StoredPublication(*row) for row in stored], settings, refuse)


def settings(**values):
    return settings_from_mapping({"db_url": "mysql://u:p@h/d", **values})


def stored(*notes: str) -> list[tuple[str, str, bytes]]:
    """Rows as the store passes them: (origin, source, parts), oldest first."""
    return [("publish", f"contact:dev{i}@b", pidf.parse_publication(
        (f'<presence xmlns="{NS}" entity="sip:a@b"><tuple id="t{i}"><status><basic>open'
         f"</basic></status></tuple><note>{note}</note></presence>").encode(), 0.5).dumps())
        for i, note in enumerate(notes)]


def test_a_publish_over_max_document_bytes_is_refused_at_the_limit():
    pubs = stored("x" * 3000, "y" * 3000)
    size = len(pidf.compose("a@b", [pidf.Parts.loads(p) for _, _, p in pubs]))
    assert composer("a@b", settings(max_document_bytes=size), refuse=True)(pubs)
    with pytest.raises(pidf.DocumentTooLarge):
        composer("a@b", settings(max_document_bytes=size - 1), refuse=True)(pubs)


def test_changes_nobody_can_refuse_leave_out_what_does_not_fit(caplog):
    pubs = stored("x" * 5000, "y" * 5000)
    first = pidf.compose("a@b", [pidf.Parts.loads(pubs[0][2])])
    with caplog.at_level(logging.WARNING, logger="pa.compositor"):
        assert composer("a@b", settings(max_document_bytes=len(first) + 100))(pubs) == first
    assert "1 of 2 publications left out" in caplog.text


def test_entity_tags_grow_and_stay_unguessable():
    """New entity-tags sort after older ones (the etag index is appended
    to), are SIP tokens, and differ within one millisecond."""
    import time

    from pa_handlers.compositor import new_etag
    from pa_handlers.sip import is_token
    first = new_etag()
    time.sleep(0.002)
    tags = [new_etag() for _ in range(1000)]
    assert all(first < tag for tag in tags)
    assert len(set(tags)) == 1000 and all(is_token(t) and len(t) <= 64 for t in tags)
