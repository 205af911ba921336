-- Presence agent schema, version 4: NOTIFYs in flight, and subscriptions
-- counted per watcher.
--
-- At most one NOTIFY per subscription is in flight, whichever process or
-- node sent it: the one with CSeq local_cseq, while notify_deadline is not
-- 0.  A change meanwhile sets notify_dirty instead of sending; the answer
-- (or the deadline) then sends the newest state, so a burst of changes
-- costs a slow watcher one NOTIFY, not one per change.
ALTER TABLE pa_subscription
  -- When the NOTIFY in flight counts as unanswered (UNIX seconds); 0: none
  -- in flight.
  ADD COLUMN notify_deadline INT UNSIGNED NOT NULL DEFAULT 0,
  -- 1: the state changed since the NOTIFY in flight was built.
  ADD COLUMN notify_dirty TINYINT UNSIGNED NOT NULL DEFAULT 0,
  -- 1: the NOTIFY in flight repeats one that went unanswered (whose answer
  -- may have been lost with the node that sent it); unanswered too, the
  -- subscription ends.
  ADD COLUMN notify_retry TINYINT UNSIGNED NOT NULL DEFAULT 0,
  -- The timers' sweep of unanswered NOTIFYs.
  ADD KEY by_notify_deadline (notify_deadline),
  -- max_subscriptions_per_watcher.
  ADD KEY by_watcher (watcher);

INSERT INTO pa_schema (version) VALUES (4);
