-- Migration 2 (PRAGMA user_version = 2): results of `cbuild check`.
-- store-format.md quotes this file verbatim; a test checks that it does.

-- One row per check of a stored output: when, how many rebuilds, and
-- whether every rebuild gave the same bytes.
CREATE TABLE checks (
  id       INTEGER PRIMARY KEY,
  object   INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
  checked  INTEGER NOT NULL,             -- unix time, seconds
  rounds   INTEGER NOT NULL CHECK (rounds > 0),
  verdict  TEXT    NOT NULL CHECK (verdict IN ('reproducible', 'differs'))
);
CREATE INDEX checks_by_object ON checks(object, checked);
