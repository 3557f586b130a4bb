// io_node.js - Node's side of the benchmark's I/O scenario: a webhook
// receiver whose handler waits on a slow API, written as a Node user
// would.  Bearer check, JSON.parse, 200 with walua's answer right away;
// then every message of the Meta envelope gets its own async handler,
// which does `await fetch(BACKEND)` (and reads the answer).  Handlers of
// all requests and messages run concurrently on the event loop.  Nothing
// is stored.
//
//   node io_node.js PORT TOKEN BACKEND_URL
//
// GET /stats answers {"handled","failed","first_handled_ms",
// "last_handled_ms","last_error"}: handled counts the fetches answered
// 200, with the Unix time in ms (fractional) of the first and the last;
// POST /reset zeroes them.
'use strict';
const http = require('http');
const { performance } = require('perf_hooks');

const port = Number(process.argv[2]);
const expected = 'Bearer ' + process.argv[3];
const backend = process.argv[4];

let stats;
function reset() {
  stats = { handled: 0, failed: 0, first_handled_ms: 0, last_handled_ms: 0,
    last_error: null };
}
reset();

const now = () => performance.timeOrigin + performance.now();
const arr = (x) => (Array.isArray(x) ? x : []);

async function onMessage(m) {
  try {
    const res = await fetch(backend);
    await res.text();
    if (res.status !== 200) throw new Error('backend answered ' + res.status);
    const t = now();
    if (!stats.first_handled_ms) stats.first_handled_ms = t;
    stats.last_handled_ms = t;
    stats.handled++;
  } catch (e) {
    stats.failed++;
    stats.last_error = String((e && e.cause) || e);
  }
}

function answer(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function handle(req, res, body) {
  if (req.headers.authorization !== expected)
    return answer(res, 401, '{"ok":false,"error":"unauthorized"}');
  let doc;
  try {
    doc = JSON.parse(body);
  } catch (e) {
    return answer(res, 400, '{"ok":false,"error":"invalid JSON"}');
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return answer(res, 400, '{"ok":false,"error":"not a JSON object"}');
  const messages = [];
  let n = 0;
  for (const entry of arr(doc.entry)) {
    for (const ch of arr(entry && entry.changes)) {
      const v = (ch && ch.value) || {};
      for (const m of arr(v.messages)) messages.push(m);
      n += arr(v.messages).length + arr(v.statuses).length;
    }
  }
  answer(res, 200, '{"ok":true,"events":' + n + ',"duplicates":0}');
  for (const m of messages) onMessage(m);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz')
    return answer(res, 200, '{"ok":true}');
  if (req.url === '/stats')
    return answer(res, 200, JSON.stringify(stats));
  if (req.url === '/reset' && req.method === 'POST') {
    reset();
    return answer(res, 200, '{"ok":true}');
  }
  if (req.url !== '/webhooks/insider')
    return answer(res, 404, '{"ok":false}');
  if (req.method !== 'POST')
    return answer(res, 200, '{"ok":true,"events":0}');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks).toString()));
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', 4096);
process.on('SIGTERM', () => process.exit(0));
