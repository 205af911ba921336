-- Presence agent schema, version 2: what XMPP allows in the XMPP
-- gateway's tables.
--
-- A resourcepart is up to 1023 bytes of UTF-8 (RFC 7622 3.4).  It is
-- kept as those bytes (compared as XMPP compares prepared strings, octet
-- for octet), so that the primary key (jid, resource) stays within
-- InnoDB's 3072-byte limit: 255 characters of utf8mb4 and 1023 bytes.
-- Priorities are clamped to RFC 6121's -128..127 before they are stored.

ALTER TABLE pa_xmpp_resource MODIFY resource VARBINARY(1023) NOT NULL;

INSERT INTO pa_schema (version) VALUES (2);
