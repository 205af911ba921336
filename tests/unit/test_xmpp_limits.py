"""What an XMPP peer sends is brought within RFC 6121's bounds before the
gateway stores it, and the resources kept per user are a setting."""

import pytest

from pa_handlers.config import ConfigError, settings_from_mapping
from pa_handlers.xmpp_mapping import XmppPresence, received

DB = "mysql://u:p@127.0.0.1:3306/db"


@pytest.mark.parametrize("priority, kept", [(99999, 127), (128, 127), (127, 127), (0, 0),
                                            (-128, -128), (-99999, -128), ("junk", 0)])
def test_priority_is_clamped_to_xmpps_range(priority, kept):
    assert received(XmppPresence(True, priority=priority)).priority == kept


def test_show_and_status_are_cleaned():
    presence = received(XmppPresence(True, show="sleeping", status="a\x00b" + "c" * 2000))
    assert presence.show == ""
    assert presence.status.startswith("abc") and len(presence.status) == 1000


def test_resources_per_xmpp_user_is_a_setting():
    assert settings_from_mapping({"db_url": DB}).xmpp_max_resources == 10
    assert settings_from_mapping({"db_url": DB, "xmpp_max_resources": 3}).xmpp_max_resources == 3
    for bad in (0, 1001, "many"):
        with pytest.raises(ConfigError, match="xmpp_max_resources"):
            settings_from_mapping({"db_url": DB, "xmpp_max_resources": bad})
