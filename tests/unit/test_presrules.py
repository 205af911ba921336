import time

import pytest

from pa_handlers import presrules
from pa_handlers.presrules import (ALLOW, BLOCK, CONFIRM, DEVICES, EVERYTHING, NOTHING, PERSONS,
                                   POLITE_BLOCK, SERVICES, InvalidRules, evaluate, parse_rules)

HEAD = ('<?xml version="1.0" encoding="UTF-8"?><cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:'
        'common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">')


def rule(conditions="", handling=None, transformations=""):
    actions = f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>" \
        if handling else ""
    return (f'<cr:rule id="r"><cr:conditions>{conditions}</cr:conditions>{actions}'
            f"<cr:transformations>{transformations}</cr:transformations></cr:rule>")


def rules(*parts) -> bytes:
    return (HEAD + "".join(parts) + "</cr:ruleset>").encode()


ALL = ("<pr:provide-services><pr:all-services/></pr:provide-services>"
       "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
       "<pr:provide-devices><pr:all-devices/></pr:provide-devices>")
NOW = time.time()


def decide(doc: bytes, watcher: str):
    d = evaluate(parse_rules(doc), watcher, NOW)
    return d.sub_handling, d.permissions


def test_identity_one_matches_the_watcher_only():
    doc = rules(rule('<cr:identity><cr:one id="sip:Alice@EXAMPLE.com"/></cr:identity>', ALLOW, ALL))
    assert decide(doc, "Alice@example.com") == (ALLOW, EVERYTHING)
    assert decide(doc, "bob@example.com") == (CONFIRM, NOTHING)


def test_identity_many_with_domain_and_exceptions():
    doc = rules(rule('<cr:identity><cr:many domain="example.com"><cr:except id="sip:eve@example.com"/>'
                     '</cr:many></cr:identity>', ALLOW, ALL))
    assert decide(doc, "alice@example.com")[0] == ALLOW
    assert decide(doc, "eve@example.com")[0] == CONFIRM
    assert decide(doc, "alice@example.org")[0] == CONFIRM
    anyone = rules(rule('<cr:identity><cr:many><cr:except domain="spam.example"/></cr:many>'
                        "</cr:identity>", ALLOW))
    assert decide(anyone, "x@example.net")[0] == ALLOW
    assert decide(anyone, "x@spam.example")[0] == CONFIRM


def test_no_conditions_match_everyone_and_no_rule_means_confirm():
    assert decide(rules(rule("", BLOCK)), "x@y")[0] == BLOCK
    assert decide(rules(), "x@y") == (CONFIRM, NOTHING)


def test_most_permissive_sub_handling_wins_and_permissions_unite():
    doc = rules(rule("", BLOCK),
                rule('<cr:identity><cr:one id="sip:a@x"/></cr:identity>', POLITE_BLOCK,
                     "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"),
                rule('<cr:identity><cr:one id="sip:a@x"/></cr:identity>', None,
                     "<pr:provide-devices><pr:all-devices/></pr:provide-devices>"))
    assert decide(doc, "a@x") == (POLITE_BLOCK, PERSONS | DEVICES)
    assert decide(doc, "b@x") == (BLOCK, NOTHING)


def test_validity_limits_a_rule_in_time():
    past = rules(rule("<cr:validity><cr:from>2001-01-01T00:00:00Z</cr:from>"
                      "<cr:until>2002-01-01T00:00:00Z</cr:until></cr:validity>", ALLOW))
    now = rules(rule("<cr:validity><cr:from>2001-01-01T00:00:00Z</cr:from>"
                     "<cr:until>2999-01-01T00:00:00+01:00</cr:until></cr:validity>", ALLOW))
    assert decide(past, "x@y")[0] == CONFIRM
    assert decide(now, "x@y")[0] == ALLOW


def test_a_condition_we_do_not_understand_never_holds():
    doc = rules(rule("<cr:sphere value='work'/>", ALLOW))
    assert decide(doc, "x@y")[0] == CONFIRM


def test_listing_particular_services_grants_nothing_all_or_none():
    doc = rules(rule("", ALLOW, "<pr:provide-services><pr:service-uri>sip:x</pr:service-uri>"
                                "</pr:provide-services>"))
    assert decide(doc, "x@y") == (ALLOW, NOTHING)
    assert decide(rules(rule("", ALLOW, "<pr:provide-services><pr:all-services/>"
                                       "</pr:provide-services>")), "x@y") == (ALLOW, SERVICES)


@pytest.mark.parametrize("body, reason", [
    (b"<cr:ruleset", "Not Well-Formed"),
    (b"<foo/>", "Not A Common-Policy"),
    (rules(rule("", "maybe")), "Unknown sub-handling"),
    (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + rules(), "DTD"),
])
def test_bad_documents(body, reason):
    with pytest.raises(InvalidRules, match=reason):
        parse_rules(body)


def test_content_type():
    assert presrules.CONTENT_TYPE == "application/auth-policy+xml"
