-- PLACEHOLDER (issue 18 branch only): another change adds the real
-- sql/005 at the same time; on merge this file is deleted and theirs takes
-- its place.  It only records the version, so that 006 applies after it.
INSERT INTO pa_schema (version) VALUES (5);
