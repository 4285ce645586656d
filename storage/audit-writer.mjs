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
const storedHash = db.prepare('SELECT hash FROM audit WHERE seq = ?').pluck();
// A batch comes again when the thread that committed it stopped before it could say so: the rows stored then are
// passed over when they are the same event (seq first, hash last), so the chain goes on instead of every retry failing
// on seq for good. Another event under a stored seq still fails the whole batch.
const append = db.transaction((rows) => {
  for (const r of rows) {
    try {
      insert.run(r);
    } catch (err) {
      if (err?.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY' || storedHash.get(r[0]) !== r[r.length - 1]) throw err;
    }
  }
});

parentPort.on('message', (m) => {
  // The last message: sent after every batch, so the statement under way (waiting on another process's lock, say) ends
  // here first. Terminating the thread inside one made better-sqlite3 throw into a stopped thread, which aborts Node.
  if (m.close) {
    db.close();
    parentPort.close();
    return;
  }
  try {
    append(m.rows);
    parentPort.postMessage({ id: m.id, error: null });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
});
