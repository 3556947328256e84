-- rules.sql: tutorwatch's five starter rules (rules/packs/default.yaml) as SQL over `ev`.
-- Each rule's matches go into `matches`; cooldowns are then applied per (rule, institution) by a
-- recursive walk (an alert, then the first match at least the cooldown later, ...), as the
-- engine does. The result is one row per rule with its alert count.
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA temp_store = MEMORY;
CREATE TEMP TABLE matches(rule TEXT, cooldown_ms INTEGER, institution_id TEXT, ts_ms INTEGER,
                          seq INTEGER);

-- prepaid_over_cap: one prepaid payment over 5,000 yuan, 60 class hours or 90 days.
INSERT INTO matches
SELECT 'prepaid_over_cap', 0, institution_id, ts_ms, seq FROM ev
WHERE type = 'payment' AND channel <> 'pay_after_class'
  AND (amount_fen > 500000 OR class_hours > 60 OR service_days > 90);

-- payment_outside_supervised_account (cooldown 1 day).
INSERT INTO matches
SELECT 'payment_outside_supervised_account', 86400000, institution_id, ts_ms, seq FROM ev
WHERE type = 'payment' AND channel = 'unsupervised';

-- complaint_runaway_words (cooldown 1 day): the runaway_words list.
INSERT INTO matches
SELECT 'complaint_runaway_words', 86400000, institution_id, ts_ms, seq FROM ev
WHERE type = 'complaint'
  AND (text LIKE '%跑路%' OR text LIKE '%卷款%' OR text LIKE '%关门%' OR text LIKE '%倒闭%'
       OR text LIKE '%停课%' OR text LIKE '%联系不上%' OR text LIKE '%失联%' OR text LIKE '%退费难%'
       OR text LIKE '%不退费%' OR text LIKE '%拒绝退费%' OR text LIKE '%欠薪%'
       OR text LIKE '%拖欠工资%' OR text LIKE '%工资没发%');

-- complaint_spike (cooldown 7 days): five or more complaints in the window (t - 7d, t].
INSERT INTO matches
SELECT 'complaint_spike', 604800000, institution_id, ts_ms, seq FROM (
  SELECT institution_id, ts_ms, seq,
         count(*) OVER (PARTITION BY institution_id ORDER BY ts_ms
                        RANGE BETWEEN 604799999 PRECEDING AND CURRENT ROW) AS n7d
  FROM ev WHERE type = 'complaint')
WHERE n7d >= 5;

-- closure_with_prepaid_balance: close, suspend or licence revoked while collected - consumed -
-- refunded (up to that event) is positive.
INSERT INTO matches
SELECT 'closure_with_prepaid_balance', 0, c.institution_id, c.ts_ms, c.seq FROM ev c
WHERE c.type = 'institution' AND c.action IN ('close', 'suspend', 'license_revoked')
  AND (SELECT coalesce(sum(CASE
                             WHEN e.type = 'payment' AND e.channel <> 'pay_after_class' THEN e.amount_fen
                             WHEN e.type = 'consumption' THEN -e.amount_fen
                             WHEN e.type = 'refund' AND e.status = 'paid' THEN -e.amount_fen
                             ELSE 0 END), 0)
       FROM ev e WHERE e.institution_id = c.institution_id AND e.seq <= c.seq) > 0;

CREATE INDEX matches_key ON matches(rule, institution_id, ts_ms, seq);

WITH RECURSIVE fired(rule, cooldown_ms, institution_id, ts_ms, seq) AS (
  SELECT m.rule, m.cooldown_ms, m.institution_id, m.ts_ms, m.seq FROM matches m
  WHERE NOT EXISTS (SELECT 1 FROM matches p WHERE p.rule = m.rule
                    AND p.institution_id = m.institution_id
                    AND (p.ts_ms < m.ts_ms OR (p.ts_ms = m.ts_ms AND p.seq < m.seq)))
  UNION ALL
  SELECT n.rule, n.cooldown_ms, n.institution_id, n.ts_ms, n.seq FROM fired f
  JOIN matches n ON n.rule = f.rule AND n.institution_id = f.institution_id
   AND n.rowid = (SELECT x.rowid FROM matches x
                  WHERE x.rule = f.rule AND x.institution_id = f.institution_id
                    AND x.ts_ms >= f.ts_ms + f.cooldown_ms
                    AND (x.ts_ms > f.ts_ms OR x.seq > f.seq)
                  ORDER BY x.ts_ms, x.seq LIMIT 1)
)
SELECT rule, count(*) FROM fired GROUP BY rule ORDER BY rule;
