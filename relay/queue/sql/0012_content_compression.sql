-- A message's content is written once, in the transaction that precedes its 250, read for
-- delivery, and emptied at retention. PostgreSQL compresses a large value with pglz unless
-- the column says otherwise, in the backend running the INSERT, and pglz is slow: 2.3 to
-- 2.6 ms of the server's CPU per 100 KB text newsletter, against about 0.4 ms stored as it
-- is or with lz4 (`python -m bench.storage`, bench/results/storage-20261130-180453.json on
-- PostgreSQL 15, storage-20261130-180648.json on the embedded 16). So: lz4 where the server
-- was built with it (PostgreSQL 14+ from Debian or the PGDG packages is; half the size of
-- that text, where pglz took a fifth), and otherwise, as on the embedded server, no
-- compression at all, the way Postfix keeps its queue files: more disk for the bodies kept
-- until `retention_bodies`, less CPU for every message. Only values stored from now on are
-- affected.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN content SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    ALTER TABLE messages ALTER COLUMN content SET STORAGE EXTERNAL;
END
$$;
