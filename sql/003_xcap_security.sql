-- Presence agent schema, version 3: what the built-in XCAP server's digest
-- authentication shares between all processes and nodes.

-- Secrets every node must share, created once by the first process that
-- needs one (a random value; INSERT IGNORE, so concurrent starts agree).
-- The XCAP digest nonces are signed with 'xcap_nonce' unless the settings
-- give xcap_nonce_secret.
CREATE TABLE pa_secret (
  name VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  value VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
) ENGINE=InnoDB;

-- Each (nonce, nonce-count) that proved an XCAP request, until the nonce
-- expires: the same pair again is a replay, whichever node it reaches.
CREATE TABLE pa_xcap_nonce (
  nonce VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  nc INT UNSIGNED NOT NULL,
  expires_at INT UNSIGNED NOT NULL,
  PRIMARY KEY (nonce, nc),
  KEY by_expiry (expires_at)
) ENGINE=InnoDB;

INSERT INTO pa_schema (version) VALUES (3);
