-- Presence agent schema, version 5: partial state (RFC 4235 dialog, RFC
-- 3680 reg).  A NOTIFY may carry only what changed since the document the
-- watcher acknowledged (2xx) last; these columns say which that was.
-- Both only ever name a version the watcher has at least: a lower value
-- costs a larger partial document (or a full one), never a wrong one.
ALTER TABLE pa_subscription
  -- pa_document.version of the document the NOTIFY in flight was built
  -- from (at most: read no later than the document itself).
  ADD COLUMN sent_version BIGINT UNSIGNED NOT NULL DEFAULT 0,
  -- pa_document.version the watcher acknowledged with a 2xx (0: none, or
  -- a full document is due: a SUBSCRIBE-triggered NOTIFY).
  ADD COLUMN told_version BIGINT UNSIGNED NOT NULL DEFAULT 0;

INSERT INTO pa_schema (version) VALUES (5);
