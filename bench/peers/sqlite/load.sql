-- load.sql: the events, imported as raw JSON lines into `raw` by run.sh, become one typed table
-- `ev` (one column per field the five rules read), indexed by institution and stream order.
-- This is the batch a regulator's data team would run before its SQL rules (rules.sql).
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE ev AS
SELECT rowid AS seq,
       json_extract(j, '$.event_id') AS event_id,
       json_extract(j, '$.type') AS type,
       CAST(round((julianday(json_extract(j, '$.ts')) - 2440587.5) * 86400000.0) AS INTEGER) AS ts_ms,
       json_extract(j, '$.institution_id') AS institution_id,
       json_extract(j, '$.amount_fen') AS amount_fen,
       json_extract(j, '$.class_hours') AS class_hours,
       json_extract(j, '$.service_days') AS service_days,
       json_extract(j, '$.channel') AS channel,
       json_extract(j, '$.status') AS status,
       json_extract(j, '$.action') AS action,
       json_extract(j, '$.text') AS text
FROM raw;
DROP TABLE raw;
CREATE INDEX ev_inst_seq ON ev(institution_id, seq);
