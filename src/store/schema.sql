-- The cbuild store database, schema version 1 (PRAGMA user_version = 1).
-- store-format.md quotes this file verbatim; a test checks that it does.
-- Store paths are kept as base names (`<hash>-<name>`): the store directory
-- is the `store/` folder beside this database.

-- Every valid store object. A row exists only once the object's files are
-- complete, synced and renamed into place.
CREATE TABLE objects (
  id          INTEGER PRIMARY KEY,
  path        TEXT    NOT NULL UNIQUE,   -- base name in store/
  kind        TEXT    NOT NULL CHECK (kind IN ('source', 'drv', 'output')),
  digest      BLOB    NOT NULL,          -- tree digest, 32 bytes (store-format.md)
  size        INTEGER NOT NULL,          -- bytes of file content
  deriver     TEXT,                      -- for outputs: the .drv base name
  registered  INTEGER NOT NULL,          -- unix time, seconds
  sandboxed   INTEGER NOT NULL DEFAULT 1 -- 0: built with --sandbox=off
);

-- References between objects: what each one mentions.
CREATE TABLE refs (
  referrer  INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
  reference INTEGER NOT NULL REFERENCES objects(id) ON DELETE RESTRICT,
  PRIMARY KEY (referrer, reference)
) WITHOUT ROWID;
CREATE INDEX refs_by_reference ON refs(reference);

-- A .drv object's content and what the database knows beside it. The
-- content here is the source of truth: the file in store/ is written when a
-- command needs it (targets of `cbuild eval`, builds, show-derivation) and
-- must then equal it byte for byte.
CREATE TABLE derivations (
  object     INTEGER PRIMARY KEY REFERENCES objects(id) ON DELETE CASCADE,
  drv_hash   BLOB    NOT NULL UNIQUE,    -- BLAKE3 of the content
  content    BLOB    NOT NULL,           -- the canonical serialisation
  meta       TEXT    NOT NULL,           -- JSON object, never hashed
  run_inputs TEXT    NOT NULL            -- JSON array of .drv base names
);

-- Outputs of built derivations, keyed by derivation hash or by the hash of
-- the resolved derivation (filled by `cbuild realise`).
CREATE TABLE realisations (
  key    BLOB    NOT NULL,               -- drv hash or resolved hash
  output TEXT    NOT NULL,
  object INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
  PRIMARY KEY (key, output)
) WITHOUT ROWID;

-- A cache of file digests by stat data, so that re-importing an unchanged
-- source tree reads no file. It only ever saves work: an entry whose stat
-- data differs in any field, or that was written less than two seconds after
-- the file's last change, is ignored and the file is hashed.
CREATE TABLE file_cache (
  path      TEXT    NOT NULL PRIMARY KEY, -- absolute path
  dev       INTEGER NOT NULL,
  ino       INTEGER NOT NULL,
  size      INTEGER NOT NULL,
  mtime_ns  INTEGER NOT NULL,
  ctime_ns  INTEGER NOT NULL,
  mode      INTEGER NOT NULL,
  digest    BLOB    NOT NULL             -- BLAKE3 of the content
) WITHOUT ROWID;
