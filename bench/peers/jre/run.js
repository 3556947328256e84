// run.js: the five tutorwatch starter rules on json-rules-engine, the lightweight rule engine
// people reach for in Node.js, over the same JSON Lines events `tutorwatch gen` writes.
//
//   node run.js EVENTS.jsonl      → one JSON line on stdout: events, seconds, events/s, alerts
//
// json-rules-engine evaluates conditions over facts; it keeps no state between runs, so the
// aggregates the rules read (prepaid balance, 7-day complaint count) are kept here in plain
// JavaScript maps per institution and passed as facts, and cooldowns are applied to its results,
// exactly as tutorwatch's default pack defines them (rules/packs/default.yaml). Timed: reading,
// parsing and evaluating every event (the process start and `require` are not).
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Engine } = require('json-rules-engine');

const DAY_MS = 86400000;
const RUNAWAY = /跑路|卷款|关门|倒闭|停课|联系不上|失联|退费难|不退费|拒绝退费|欠薪|拖欠工资|工资没发/;
const COOLDOWN_MS = {
  prepaid_over_cap: 0,
  payment_outside_supervised_account: DAY_MS,
  complaint_runaway_words: DAY_MS,
  complaint_spike: 7 * DAY_MS,
  closure_with_prepaid_balance: 0,
};

function makeEngine() {
  const engine = new Engine([], { allowUndefinedFacts: true });
  engine.addOperator('matchesRunaway', (v) => typeof v === 'string' && RUNAWAY.test(v));
  const is = (fact, value) => ({ fact, operator: 'equal', value });
  engine.addRule({
    name: 'prepaid_over_cap',
    conditions: {
      all: [
        is('type', 'payment'),
        { fact: 'channel', operator: 'notEqual', value: 'pay_after_class' },
        {
          any: [
            { fact: 'amount_fen', operator: 'greaterThan', value: 500000 },
            { fact: 'class_hours', operator: 'greaterThan', value: 60 },
            { fact: 'service_days', operator: 'greaterThan', value: 90 },
          ],
        },
      ],
    },
    event: { type: 'prepaid_over_cap' },
  });
  engine.addRule({
    name: 'payment_outside_supervised_account',
    conditions: { all: [is('type', 'payment'), is('channel', 'unsupervised')] },
    event: { type: 'payment_outside_supervised_account' },
  });
  engine.addRule({
    name: 'complaint_runaway_words',
    conditions: {
      all: [is('type', 'complaint'), { fact: 'text', operator: 'matchesRunaway', value: true }],
    },
    event: { type: 'complaint_runaway_words' },
  });
  engine.addRule({
    name: 'complaint_spike',
    conditions: {
      all: [is('type', 'complaint'), { fact: 'complaints_7d', operator: 'greaterThanInclusive', value: 5 }],
    },
    event: { type: 'complaint_spike' },
  });
  engine.addRule({
    name: 'closure_with_prepaid_balance',
    conditions: {
      all: [
        is('type', 'institution'),
        { fact: 'action', operator: 'in', value: ['close', 'suspend', 'license_revoked'] },
        { fact: 'balance_fen', operator: 'greaterThan', value: 0 },
      ],
    },
    event: { type: 'closure_with_prepaid_balance' },
  });
  return engine;
}

async function main() {
  const path = process.argv[2];
  if (!path) {
    console.error('usage: node run.js EVENTS.jsonl');
    process.exit(2);
  }
  const engine = makeEngine();
  const balance = new Map(); // institution → collected − consumed − refunded (fen)
  const complaints = new Map(); // institution → complaint times within the last 7 days
  const lastFired = new Map(); // rule + institution → time of the last alert
  const alerts = {};
  for (const r of Object.keys(COOLDOWN_MS)) alerts[r] = 0;
  let events = 0;
  const t0 = process.hrtime.bigint();
  const rl = readline.createInterface({ input: fs.createReadStream(path), crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.length === 0) continue;
    const ev = JSON.parse(line);
    events++;
    const inst = ev.institution_id;
    const ts = Date.parse(ev.ts);
    // The aggregates the event feeds, before the rules see it (as tutorwatch does).
    let delta = 0;
    if (ev.type === 'payment' && ev.channel !== 'pay_after_class') delta = ev.amount_fen;
    else if (ev.type === 'consumption') delta = -ev.amount_fen;
    else if (ev.type === 'refund' && ev.status === 'paid') delta = -ev.amount_fen;
    if (delta !== 0) balance.set(inst, (balance.get(inst) || 0) + delta);
    const facts = Object.assign({}, ev);
    if (ev.type === 'complaint') {
      let list = complaints.get(inst);
      if (!list) complaints.set(inst, (list = []));
      list.push(ts);
      while (list.length > 0 && list[0] <= ts - 7 * DAY_MS) list.shift();
      facts.complaints_7d = list.length;
    }
    facts.balance_fen = balance.get(inst) || 0;
    const { events: fired } = await engine.run(facts);
    for (const f of fired) {
      const key = f.type + '\u0000' + inst;
      const last = lastFired.get(key);
      if (last !== undefined && ts - last < COOLDOWN_MS[f.type]) continue;
      lastFired.set(key, ts);
      alerts[f.type]++;
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({
    peer: 'json-rules-engine',
    version: require('json-rules-engine/package.json').version,
    node: process.version,
    events,
    seconds,
    events_per_s: events / seconds,
    alerts,
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
