-- Presence agent schema, version 1.
-- Apply the files of this folder in name order to an empty database:
--   for f in sql/*.sql; do mysql padb < "$f"; done
--
-- Conventions: InnoDB, a primary key on every table (Galera needs one),
-- times as UNIX seconds (INT UNSIGNED, the same on every node whatever its
-- time zone), URIs compared through their normalised address-of-record
-- "user@host" (RFC 3261 19.1.4: user case-sensitive, host lower-cased),
-- SIP tokens (Call-ID, tags, event names) in ASCII with binary collation.
-- "presence_domain" is the handler's domain argument (registrar, jabber):
-- each is a separate namespace of presentities.

CREATE TABLE pa_schema (
  version INT UNSIGNED NOT NULL PRIMARY KEY,
  applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;

-- One row per subscription: the dialog the SUBSCRIBE created (RFC 6665 4.1)
-- with everything needed to send an in-dialog NOTIFY from any process of
-- any node, and after a restart.
CREATE TABLE pa_subscription (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  presence_domain VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  presentity VARCHAR(255) NOT NULL,
  watcher VARCHAR(255) NOT NULL,
  watcher_display VARCHAR(128) NOT NULL DEFAULT '',
  call_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  local_tag VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  remote_tag VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- To of the SUBSCRIBE without tag: the From of our NOTIFYs.
  local_uri VARCHAR(1024) NOT NULL,
  -- From of the SUBSCRIBE without tag: the To of our NOTIFYs.
  remote_uri VARCHAR(1024) NOT NULL,
  -- The watcher's Contact: request-URI of our NOTIFYs (target refresh).
  remote_target VARCHAR(1024) NOT NULL,
  -- Record-Route of the SUBSCRIBE, in received order (RFC 3261 12.1.1).
  route_set TEXT NOT NULL,
  local_contact VARCHAR(255) NOT NULL,
  -- Local socket (proto:ip:port) the SUBSCRIBE arrived on; NOTIFYs leave by it.
  socket VARCHAR(128) NOT NULL,
  -- Where the SUBSCRIBE came from (proto:ip:port), for NAT handling.
  received VARCHAR(128) NOT NULL DEFAULT '',
  remote_cseq INT UNSIGNED NOT NULL,
  -- CSeq of the last NOTIFY sent; incremented in the database so that it
  -- grows across processes, nodes and restarts.
  local_cseq INT UNSIGNED NOT NULL,
  -- Document format negotiated from Accept.
  content_type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  -- What the watcher may see (RFC 5025 transformations): 1 tuples and
  -- notes, 2 persons, 4 devices; 0 is the neutral document of polite-block.
  -- (A presence.winfo document's version is the NOTIFY's CSeq minus one.)
  permissions TINYINT UNSIGNED NOT NULL DEFAULT 7,
  expires_at INT UNSIGNED NOT NULL,
  -- The last answer to a NOTIFY that was not a success (NULL: all went
  -- well).  NOTIFYs in flight are tracked by the sending node, like its
  -- transactions, in Kamailio's shared memory (htable pa_notify).
  last_notify_code SMALLINT UNSIGNED NULL,
  created_at INT UNSIGNED NOT NULL,
  UNIQUE KEY dialog (call_id, local_tag, remote_tag),
  KEY by_presentity (presentity, presence_domain, event),
  KEY by_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per publication (RFC 3903): a PUBLISHed document of one
-- presentity, or state derived from a registration (origin 'registrar')
-- or from the XMPP gateway (origin 'jabber').
CREATE TABLE pa_publication (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  presence_domain VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  presentity VARCHAR(255) NOT NULL,
  etag VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  origin VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'publish',
  -- What identifies the source within the presentity (the publishing
  -- device, the registered contact): a new publication from the same
  -- source supersedes the old one.
  source VARCHAR(512) NOT NULL DEFAULT '',
  publisher VARCHAR(255) NOT NULL DEFAULT '',
  content_type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The published document's parts, parsed once and ready to aggregate
  -- (JSON of serialized elements), so that no stored publication is
  -- parsed again on the hot path.
  parts MEDIUMBLOB NOT NULL,
  expires_at INT UNSIGNED NOT NULL,
  updated_at INT UNSIGNED NOT NULL,
  UNIQUE KEY etag (etag),
  -- A presentity's publications, and within them one source's (supersede).
  KEY by_presentity (presentity, presence_domain, event, source(128)),
  KEY by_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The aggregated document of a presentity, rebuilt once per change of its
-- publications and read by every NOTIFY.  No row: nothing published.
CREATE TABLE pa_document (
  presentity VARCHAR(255) NOT NULL,
  presence_domain VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  version BIGINT UNSIGNED NOT NULL DEFAULT 0,
  body MEDIUMBLOB NOT NULL,
  updated_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (presentity, presence_domain, event)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Authorization of a watcher by a presentity (RFC 5025 sub-handling
-- outcome, or the presentity's own decision with auth 'implicit').
CREATE TABLE pa_watcher (
  presentity VARCHAR(255) NOT NULL,
  watcher VARCHAR(255) NOT NULL,
  presence_domain VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- pending | active | terminated | polite-block
  status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  display_name VARCHAR(128) NOT NULL DEFAULT '',
  updated_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (presentity, watcher, presence_domain, event)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- XCAP documents (pres-rules) of the built-in XCAP server, or the cache of
-- those fetched from an external one (body '' when it has none).
CREATE TABLE pa_xcap_document (
  owner VARCHAR(255) NOT NULL,
  auid VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  etag VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  body MEDIUMBLOB NOT NULL,
  -- When it was stored (built-in) or last confirmed by the server (cache).
  fetched_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (owner, auid),
  KEY by_age (fetched_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Work for Kamailio from processes that cannot send SIP (the XMPP gateway,
-- pa-admin): the timer of some node claims each task within a second.
CREATE TABLE pa_task (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  -- fan-out | reauthorize | remove | end
  kind VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  presentity VARCHAR(255) NOT NULL,
  presence_domain VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The watcher (remove) or the Call-ID (end).
  argument VARCHAR(255) NOT NULL DEFAULT '',
  created_at INT UNSIGNED NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The XMPP gateway's presence subscriptions: 'out', a SIP user watching an
-- XMPP user (state subscribing, subscribed, refused); 'in', an XMPP user
-- watching a SIP user (state pending, active), with the version of the SIP
-- user's document it was last told.
CREATE TABLE pa_xmpp_link (
  direction VARCHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  sip_user VARCHAR(255) NOT NULL,
  jid VARCHAR(255) NOT NULL,
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  version BIGINT UNSIGNED NOT NULL DEFAULT 0,
  updated_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (direction, sip_user, jid),
  KEY by_jid (jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The available resources of the XMPP users SIP users watch (RFC 6121
-- presence per resource), from which their documents are built.
CREATE TABLE pa_xmpp_resource (
  jid VARCHAR(255) NOT NULL,
  resource VARCHAR(255) NOT NULL,
  available TINYINT UNSIGNED NOT NULL DEFAULT 1,
  shown VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  status VARCHAR(1000) NOT NULL DEFAULT '',
  priority SMALLINT NOT NULL DEFAULT 0,
  updated_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (jid, resource)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO pa_schema (version) VALUES (1);
