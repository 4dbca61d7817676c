// ShareDB behind `ws`: the peer tandem-bench measures Tandem against.
//
// PORT          port to listen on (127.0.0.1)
// REDIS_URL     set: ops fan out across instances with sharedb-redis-pubsub
// PG_URL        set: documents live in PostgreSQL (sharedb-postgres), so that
//               several instances share them; unset: ShareDB's in-memory DB
// PG_RESET=1    drop and recreate the sharedb tables first (first instance)
//
// Text type: ot-text-unicode (code points, like Tandem). Prints "ready" once
// listening.
'use strict';
const http = require('http');
const WebSocket = require('ws');
const ShareDB = require('sharedb');
const WebSocketJSONStream = require('@teamwork/websocket-json-stream');

ShareDB.types.register(require('ot-text-unicode').type);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ops (
  collection varchar(255) NOT NULL, doc_id varchar(255) NOT NULL,
  version integer NOT NULL, operation jsonb NOT NULL,
  PRIMARY KEY (collection, doc_id, version));
CREATE TABLE IF NOT EXISTS snapshots (
  collection varchar(255) NOT NULL, doc_id varchar(255) NOT NULL,
  doc_type varchar(255), version integer NOT NULL, data jsonb, metadata jsonb,
  PRIMARY KEY (collection, doc_id));`;

async function database() {
  if (!process.env.PG_URL) return undefined;
  const { Client } = require('pg');
  const admin = new Client({ connectionString: process.env.PG_URL });
  await admin.connect();
  if (process.env.PG_RESET === '1') await admin.query('DROP TABLE IF EXISTS ops, snapshots');
  await admin.query(SCHEMA);
  await admin.end();
  const PostgresDB = require('sharedb-postgres');
  const db = new PostgresDB({ connectionString: process.env.PG_URL, max: 10 });
  // sharedb-postgres 5.0.1 reads a stored empty string back as `undefined`
  // (`row.data || undefined`), which ShareDB then refuses as an invalid
  // snapshot: every text document starts empty, so put the "" back.
  const getSnapshot = db.getSnapshot.bind(db);
  db.getSnapshot = (c, id, fields, options, cb) =>
    getSnapshot(c, id, fields, options, (err, s) => {
      if (s && s.type && s.data === undefined) s.data = '';
      cb(err, s);
    });
  return db;
}

function pubsub() {
  if (!process.env.REDIS_URL) return undefined;
  const redis = require('redis');
  const client = redis.createClient({ url: process.env.REDIS_URL });
  const observer = redis.createClient({ url: process.env.REDIS_URL });
  return require('sharedb-redis-pubsub')({ client, observer, prefix: process.env.REDIS_PREFIX || 'sharedb-bench' });
}

async function main() {
  const backend = new ShareDB({ db: await database(), pubsub: pubsub() });
  const server = http.createServer();
  const wss = new WebSocket.Server({ server });
  wss.on('connection', (ws) => backend.listen(new WebSocketJSONStream(ws)));
  const port = Number(process.env.PORT || 8090);
  server.listen(port, '127.0.0.1', () => console.log('ready'));
  const stop = () => { wss.close(); server.close(); backend.close(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
