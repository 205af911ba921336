-- Presence agent schema, version 7: back-end subscriptions of the resource
-- list server (RFC 4662 4.5, 7): the SUBSCRIBE dialogs this server holds
-- upstream for list members of domains it is not authoritative for
-- (setting local_domains).
--
-- One per (resource, event, subscriber): every list and list subscription
-- of one subscriber that holds the member shares it, and no other
-- subscriber ever sees its result (RFC 4662 7.2: it is sent with the
-- subscriber's identity, the remote presentity authorizes that user).
-- Whichever node's timer claims a row (SELECT ... FOR UPDATE SKIP LOCKED)
-- sends its SUBSCRIBE and moves due_at on, so exactly one node acts on
-- each at a time; the dialog lives here, so any node refreshes it and a
-- restart keeps it.
CREATE TABLE pa_rls_backend (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  -- The member's URI as the list names it (pa_rls_member.uri).
  resource VARCHAR(255) NOT NULL,
  event VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The list subscriber's address-of-record (pa_subscription.watcher).
  subscriber VARCHAR(255) NOT NULL,
  -- The dialog (RFC 6665): ours is the From tag.  A new initial SUBSCRIBE
  -- (after a failure) takes a new Call-ID: answers to an older one no
  -- longer match.
  call_id VARCHAR(128) NOT NULL,
  local_tag VARCHAR(64) NOT NULL,
  remote_tag VARCHAR(128) NOT NULL DEFAULT '',
  remote_target VARCHAR(1024) NOT NULL DEFAULT '',
  route_set VARCHAR(2048) NOT NULL DEFAULT '',
  local_contact VARCHAR(255) NOT NULL DEFAULT '',
  cseq INT UNSIGNED NOT NULL DEFAULT 0,
  -- idle: a SUBSCRIBE is due at due_at (initial, or after a failure),
  -- sent: one is in flight, failed (timeout) at due_at,
  -- established: the dialog stands, refreshed at due_at.
  phase VARCHAR(12) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'idle',
  due_at INT UNSIGNED NOT NULL DEFAULT 0,
  expires_at INT UNSIGNED NOT NULL DEFAULT 0,
  -- Failures in a row (the backoff doubles with each).
  failures SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  -- What upstream last said (Subscription-State, or the failure's reason).
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  last_code SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  -- The document of the last NOTIFY: a list that takes the member later
  -- starts from it.
  content_type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  body MEDIUMBLOB NULL,
  UNIQUE KEY by_resource (resource, event, subscriber),
  KEY by_dialog (call_id),
  -- max_backend_subscriptions_per_subscriber.
  KEY by_subscriber (subscriber),
  KEY by_due (due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Back-end members by URI: what a back-end NOTIFY feeds, and whether a
-- back-end subscription is still needed.
ALTER TABLE pa_rls_member ADD KEY by_uri (uri);

INSERT INTO pa_schema (version) VALUES (7);
