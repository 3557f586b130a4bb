// node_server.js - Node's side of the benchmark: the http module doing the
// work of walua's bench handler inline.  Bearer check, JSON.parse, every
// message and status of the Meta envelope taken out as an event, messages
// routed by three text rules (walua_bot.lua's), then 200 with the same
// answer walua gives.  Nothing is stored.
//
//   node node_server.js PORT TOKEN
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const expected = 'Bearer ' + process.argv[3];
let sent = 0;

const RULES = [
  [/^menu/, (ev) => {
    const reply = 'Hi ' + (ev.name || 'there') +
      '! 1) Where is my order?  2) Talk to us';
    sent += reply.length;
  }],
  [/^order\s*(\d*)/, (ev, number) => {
    const reply = 'Order ' + number + ' is on its way to ' + ev.from;
    sent += reply.length;
  }],
];

function fallback(ev) {
  const reply = 'Sorry, I did not understand "' +
    (ev.text || '').slice(0, 40) + '". Write menu.';
  sent += reply.length;
}

function route(ev) {
  if (typeof ev.text === 'string') {
    for (const [re, fn] of RULES) {
      const m = re.exec(ev.text);
      if (m) return fn(ev, m[1]);
    }
  }
  return fallback(ev);
}

const arr = (x) => (Array.isArray(x) ? x : []);

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
  let n = 0;
  for (const entry of arr(doc.entry)) {
    for (const ch of arr(entry && entry.changes)) {
      const v = (ch && ch.value) || {};
      const contact = arr(v.contacts)[0];
      const name = contact && contact.profile && contact.profile.name;
      for (const m of arr(v.messages)) {
        n++;
        route({ kind: 'message', type: m.type, from: m.from, name,
          message_id: m.id, text: m.text && m.text.body });
      }
      n += arr(v.statuses).length; // no status rules, as in walua_bot.lua
    }
  }
  return answer(res, 200, '{"ok":true,"events":' + n + ',"duplicates":0}');
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz')
    return answer(res, 200, '{"ok":true}');
  if (req.url !== '/webhooks/insider')
    return answer(res, 404, '{"ok":false}');
  if (req.method !== 'POST')
    return answer(res, 200, '{"ok":true,"events":0}');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks).toString()));
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
