-- Migration 3 (PRAGMA user_version = 3): deleting an object (`cbuild gc`)
-- finds its realisations by index, not by scanning them all.
-- store-format.md quotes this file verbatim; a test checks that it does.
CREATE INDEX IF NOT EXISTS realisations_by_object ON realisations(object);
