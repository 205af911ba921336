import pytest

from harness import Kamailio, ScratchDatabase
from sipua import SipUA, rand


def settings(database, **extra):
    """Settings for a test instance: short timers so expiry tests are quick."""
    values = dict(db_url=database.url(), auth="none", timer_interval=1, gauges_interval=1,
                  min_expires=2,
                  default_expires=900, max_subscription_expiration=1800,
                  max_publish_expiration=1200, notify_timeout=3)
    values.update(extra)
    return values


@pytest.fixture(scope="module")
def database():
    db = ScratchDatabase()
    yield db
    db.drop()


@pytest.fixture(scope="module")
def kamailio(database):
    """One Kamailio with kamailio.cfg.sample, shared by a test module."""
    k = Kamailio(settings(database)).start()
    yield k
    k.cleanup()


@pytest.fixture
def ua(kamailio):
    u = SipUA(kamailio.address)
    yield u
    u.close()


@pytest.fixture
def presentity():
    """A presentity no other test touches."""
    return f"sip:p{rand(8)}@127.0.0.1"
