#!/usr/bin/env node
// A minimal perfpilot webhook handler: trims a cache when the agent asks (docs/hooks.md).
//
// Run with: node examples/hooks/trim_hook.js [--listen 127.0.0.1:8081]
//
// It serves POST /admin/cache/trim, takes the fraction to drop from the JSON body the agent
// sends (the `body` configured for the webhook), and reads why it is called from the
// X-Perfpilot-* headers. X-Perfpilot-Run-Id is the same on every retry of one run: a run seen
// before is answered again without trimming twice. It prints `listening on http://ADDR`, then
// one JSON line per call. Node.js's standard library only.
'use strict';

const http = require('node:http');

// Run ids already handled, oldest first, with the answer given (bounded).
const handled = new Map();
const HANDLED_KEPT = 1000;
const WHY = ['Run-Id', 'Strategy', 'Kind', 'Budget', 'Rung', 'Signal', 'Value', 'Level'];

// Your service's own work goes here; this sketch only says what it would drop.
function trimCache(fraction) {
  return { trimmed: fraction };
}

function answer(res, status, document) {
  const data = JSON.stringify(document);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

function handle(req, res, text) {
  if (req.method !== 'POST' || req.url !== '/admin/cache/trim') {
    return answer(res, 404, { error: `no hook at ${req.method} ${req.url}` });
  }
  let body;
  let fraction;
  try {
    body = JSON.parse(text || '{}');
    fraction = Number(body.fraction ?? 0.25);
    if (Number.isNaN(fraction)) throw new Error('fraction is not a number');
  } catch (e) {
    // 4xx: the agent records the failure and does not retry.
    return answer(res, 400, { error: `bad body: ${e.message}` });
  }
  const why = Object.fromEntries(WHY.map((name) => [name, req.headers[`x-perfpilot-${name.toLowerCase()}`] ?? null]));
  const runId = why['Run-Id'];
  let result;
  if (runId && handled.has(runId)) {
    result = { ...handled.get(runId), duplicate: true };
  } else {
    result = trimCache(fraction);
    if (runId) {
      handled.set(runId, result);
      while (handled.size > HANDLED_KEPT) handled.delete(handled.keys().next().value);
    }
  }
  console.log(JSON.stringify({ headers: why, body, answer: result }));
  // 2xx: success; the answer's JSON goes into the agent's record of the run.
  answer(res, 200, result);
}

const flag = process.argv.indexOf('--listen');
const listen = flag >= 0 ? process.argv[flag + 1] : '127.0.0.1:8081';
const colon = listen.lastIndexOf(':');
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')));
});
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon), () => {
  console.log(`listening on http://${listen.slice(0, colon)}:${server.address().port}`);
});
