// The audit writer thread, started by startAuditWriter in audit.ts. It appends each batch of rows it is sent in one
// transaction on a connection of its own and answers with the batch's id and, when the batch was not stored, the
// error. Plain JavaScript: worker threads on Node 20 do not inherit the TypeScript loader the sources run under.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { file, insertSql } = workerData;
const db = new Database(file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('busy_timeout = 5000');
const insert = db.prepare(insertSql);
const append = db.transaction((rows) => {
  for (const r of rows) insert.run(r);
});

parentPort.on('message', (m) => {
  try {
    append(m.rows);
    parentPort.postMessage({ id: m.id, error: null });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
});
