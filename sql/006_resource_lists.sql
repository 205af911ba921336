-- Presence agent schema, version 6: the resource list server (RFC 4662,
-- RFC 4826, RFC 5367).  Independent of version 5: only new tables.
-- (Numbered 006 while another change takes 005; renumbered on merge.)

-- The service URIs of the users' rls-services documents (RFC 4826 4): each
-- list URI (user@host, as Request-URIs are compared) belongs to exactly one
-- owner, whose document (pa_xcap_document, auid 'rls-services') says what
-- the list holds.
CREATE TABLE pa_rls_service (
  uri VARCHAR(255) NOT NULL PRIMARY KEY,
  owner VARCHAR(255) NOT NULL,
  KEY by_owner (owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A list subscription: the pa_subscription row (content_type
-- 'multipart/related') holds its dialog; this row what makes it a list.
CREATE TABLE pa_rls_subscription (
  subscription_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  -- The list URI as the RLMI document names it.
  list_uri VARCHAR(255) NOT NULL,
  -- Whose rls-services document defines the list; '' for an ad-hoc list
  -- (RFC 5367), whose members came in the SUBSCRIBE.
  owner VARCHAR(255) NOT NULL DEFAULT '',
  -- The members' documents' type (the package's format the Accept chose).
  member_type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- 1: the next NOTIFY carries full state (after a SUBSCRIBE, a change of
  -- the members, a NOTIFY that went unanswered).
  full_due TINYINT UNSIGNED NOT NULL DEFAULT 0,
  -- 1: a member changed since the last NOTIFY; sent once next_notify_at
  -- has come and no NOTIFY is in flight (rls_notify_interval).
  pending TINYINT UNSIGNED NOT NULL DEFAULT 0,
  next_notify_at INT UNSIGNED NOT NULL DEFAULT 0,
  KEY by_owner (owner),
  KEY by_pending (pending, next_notify_at),
  CONSTRAINT rls_subscription_dialog FOREIGN KEY (subscription_id)
    REFERENCES pa_subscription (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The members of a list subscription (its virtual subscriptions, RFC 4662
-- 4).  A member is served from local state (source 'local': the
-- presentity's document and its own authorization of the subscriber) or
-- from an external source such as a back-end subscription (source
-- 'backend': state, reason and body as that source last reported them).
-- sent_state, sent_reason and sent_digest are what the subscriber was last
-- told, so that a partial NOTIFY carries only the members that changed.
CREATE TABLE pa_rls_member (
  subscription_id BIGINT UNSIGNED NOT NULL,
  position SMALLINT UNSIGNED NOT NULL,
  uri VARCHAR(255) NOT NULL,
  -- user@host of the member (how local presentities are keyed).
  presentity VARCHAR(255) NOT NULL,
  name VARCHAR(128) NOT NULL DEFAULT '',
  source VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'local',
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  content_type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  body MEDIUMBLOB NULL,
  sent_state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  sent_reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  sent_digest VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  -- 1: the member changed since a NOTIFY last looked at it (a partial
  -- NOTIFY reads and renders only these).
  dirty TINYINT UNSIGNED NOT NULL DEFAULT 1,
  PRIMARY KEY (subscription_id, uri),
  KEY by_presentity (presentity),
  CONSTRAINT rls_member_subscription FOREIGN KEY (subscription_id)
    REFERENCES pa_rls_subscription (subscription_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO pa_schema (version) VALUES (6);
