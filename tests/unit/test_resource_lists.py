"""RFC 4826 documents and their resolution into members, and the RLMI
body of RFC 4662 (pure code, no database)."""

import pytest
from lxml import etree

from pa_handlers import resource_lists as rl
from pa_handlers import rlmi

RL = rl.RL_NS
RLS = rl.RLS_NS
OWNER = "joe@example.com"


def doc(*lists: str) -> bytes:
    return (f'<resource-lists xmlns="{RL}">' + "".join(lists) + "</resource-lists>").encode()


def services(*items: str) -> bytes:
    return (f'<rls-services xmlns="{RLS}" xmlns:rl="{RL}">' + "".join(items)
            + "</rls-services>").encode()


def ref(name: str, owner: str = OWNER) -> str:
    return (f"http://xcap.example.com/xcap-root/resource-lists/users/sip:{owner}/index/~~/"
            f"resource-lists/list%5b@name=%22{name}%22%5d")


def resolve(service_xml: bytes, lists: bytes | None, key="list@example.com", depth=8,
            members=100):
    service = rl.parse_rls_services(service_xml, 65536)[key]
    return rl.resolve_service(service, OWNER, lambda: lists, 65536, depth, members)


def test_a_service_flattens_nested_lists_references_and_externals():
    lists = doc(f'<list name="a"><entry uri="sip:b@x"><display-name>B</display-name></entry>'
                f'<list><entry uri="sip:c@x"/><entry uri="sip:b@x"/></list>'
                f'<entry-ref ref="resource-lists/users/sip:{OWNER}/index/~~/resource-lists/'
                f'list%5b@name=%22o%22%5d/entry%5b@uri=%22sip:d@x%22%5d"/>'
                f'<external anchor="{ref("o")}"/><entry uri="mailto:e@x"/></list>',
                '<list name="o"><entry uri="sip:d@x"/><entry uri="pres:f@X"/></list>')
    members, skipped = resolve(services(
        f'<service uri="sip:list@example.com"><resource-list>{ref("a")}</resource-list>'
        "</service>"), lists)
    assert [m.uri for m in members] == ["sip:b@x", "sip:c@x", "sip:d@x", "pres:f@X"]
    assert members[0].name == "B" and members[3].presentity == "f@x"
    assert skipped == []


def test_an_inline_list_and_packages():
    xml = services('<service uri="sip:List@Example.COM"><list><rl:entry uri="sip:a@x"/></list>'
                   "<packages><package>presence</package></packages></service>")
    service = rl.parse_rls_services(xml, 65536)["List@example.com"]
    assert rl.packages_of(service) == {"presence"}
    members, _ = rl.resolve_service(service, OWNER, lambda: None, 65536, 8, 10)
    assert [m.uri for m in members] == ["sip:a@x"]


def test_references_to_other_users_or_missing_lists_are_skipped():
    lists = doc(f'<list name="a"><entry uri="sip:b@x"/><external anchor="{ref("a", "eve@x")}"/>'
                f'<external anchor="{ref("nothing")}"/><external anchor="ftp://x/y"/></list>')
    members, skipped = resolve(services(
        f'<service uri="sip:list@example.com"><resource-list>{ref("a")}</resource-list>'
        "</service>"), lists)
    assert [m.uri for m in members] == ["sip:b@x"] and len(skipped) == 3


def test_loops_depth_and_member_limits():
    loop = doc(f'<list name="a"><external anchor="{ref("b")}"/></list>',
               f'<list name="b"><list><external anchor="{ref("a")}"/></list></list>')
    svc = services(f'<service uri="sip:list@example.com"><resource-list>{ref("a")}'
                   "</resource-list></service>")
    with pytest.raises(rl.ListError) as e:
        resolve(svc, loop)
    assert e.value.kind == "loop"
    with pytest.raises(rl.ListError) as e:
        rl.check_resource_lists(etree.fromstring(loop), OWNER, 65536, 8, 100)
    assert e.value.kind == "loop"
    deep = doc('<list name="a"><list><list><entry uri="sip:x@y"/></list></list></list>')
    assert resolve(svc, deep, depth=3)[0]
    with pytest.raises(rl.ListError) as e:
        resolve(svc, deep, depth=2)
    assert e.value.kind == "depth"
    many = doc('<list name="a">' + "".join(f'<entry uri="sip:u{i}@y"/>' for i in range(4))
               + "</list>")
    assert len(resolve(svc, many, members=4)[0]) == 4
    with pytest.raises(rl.ListError) as e:
        resolve(svc, many, members=3)
    assert e.value.kind == "members"


@pytest.mark.parametrize("body, condition", [
    (b"<resource-lists", "not-well-formed"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><resource-lists xmlns="' + RL.encode() + b'"/>',
     "not-well-formed"),
    (b"<resource-lists/>", "schema-validation-error"),
    (doc('<list name="a"/><list name="a"/>'), "uniqueness-failure"),
    (doc('<list><entry uri="sip:a@b"/><entry uri="sip:a@b"/></list>'), "uniqueness-failure"),
    (doc("<list><entry/></list>"), "schema-validation-error"),
])
def test_bad_resource_lists(body, condition):
    with pytest.raises(rl.InvalidDocument) as e:
        rl.parse_resource_lists(body, 65536)
    assert e.value.condition == condition


def test_bad_rls_services():
    with pytest.raises(rl.InvalidDocument) as e:
        rl.parse_rls_services(services('<service uri="sip:a@b"><list/></service>'
                                       '<service uri="sip:a@B"><list/></service>'), 65536)
    assert e.value.condition == "uniqueness-failure"
    with pytest.raises(rl.InvalidDocument):
        rl.parse_rls_services(services('<service uri="http://a/b"><list/></service>'), 65536)
    with pytest.raises(rl.InvalidDocument):
        rl.parse_rls_services(services('<service uri="sip:a@b"/>'), 65536)
    with pytest.raises(rl.InvalidDocument) as e:
        rl.parse_rls_services(b"x" * 2000, 1024)
    assert e.value.too_large


def test_adhoc_members_ignore_references():
    body = doc(f'<list><entry uri="sip:a@x"/><list><entry uri="sip:b@x"/></list>'
               f'<external anchor="{ref("a")}"/></list>')
    assert [m.uri for m in rl.adhoc_members(body, 65536, 8, 10)] == ["sip:a@x", "sip:b@x"]


def test_rlmi_body_is_multipart_related_with_cids():
    resources = [rlmi.Resource("sip:a@x", "A & co", "active", "", "application/pidf+xml",
                               "<presence/>"),
                 rlmi.Resource("sip:b@x", "", "pending"),
                 rlmi.Resource("sip:c@x", "", "terminated", "rejected"),
                 rlmi.Resource("sip:d@x", "", "")]
    content_type, body = rlmi.body("sip:list@x", 3, False, resources)
    assert content_type.startswith('multipart/related;type="application/rlmi+xml";start="<')
    boundary = content_type.rpartition('boundary="')[2].rstrip('"')
    parts = body.split(f"--{boundary}")
    assert parts[0] == "" and parts[-1] == "--\r\n" and len(parts) == 4   # root + one document
    root = etree.fromstring(parts[1].partition("\r\n\r\n")[2].encode())
    assert root.get("version") == "3" and root.get("fullState") == "false"
    ns = {"r": rlmi.RLMI_NS}
    instances = root.findall("r:resource/r:instance", ns)
    assert [i.get("state") for i in instances] == ["active", "pending", "terminated"]
    assert instances[2].get("reason") == "rejected"
    assert root.findtext("r:resource/r:name", namespaces=ns) == "A & co"
    assert f"Content-ID: <{instances[0].get('cid')}>" in parts[2]
    assert rlmi.digest(resources[0]) != rlmi.digest(resources[0]._replace(body="<x/>"))
