// The data directory's lock: one running server per data directory. Two servers on one directory would each chain
// audit events from the same last hash (a fork no export verifies), and each would clear the other's downloads under
// way at start. SQLite's own file lock holds it: the kernel releases it when the process ends however it ends, and it
// works across processes and containers that share the directory. It is a POSIX lock, which a process drops when it
// closes any descriptor of the file: nothing else in airlock opens airlock.lock.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { UserError, whyUnreadable } from '../server/errors.js';

// LOCK_FILE is the lock's file name in the data directory.
export const LOCK_FILE = 'airlock.lock';

// DataDirLock is held until release().
export interface DataDirLock {
  release(): void;
}

// lockDataDir takes the data directory's lock, or says that a running server holds it.
export function lockDataDir(dataDir: string): DataDirLock {
  const file = path.join(dataDir, LOCK_FILE);
  try {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    // mkdir says EEXIST for a file where the directory should be: words that read as if the directory were there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined) throw err;
    const why = code === 'EEXIST' ? 'a file, not a directory' : code === 'ENOTDIR' ? 'a file in its path is not a directory (ENOTDIR)' : whyUnreadable(err, 'directory');
    throw new UserError(`data directory ${dataDir}: ${why}`);
  }
  let db: Database.Database | null = null;
  try {
    db = new Database(file, { timeout: 0 });
    // The lock takes no journal file: nothing is ever written, and a journal would need a writable directory.
    db.pragma('journal_mode = MEMORY');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db?.close();
    const busy = err instanceof Database.SqliteError && err.code.startsWith('SQLITE_BUSY');
    if (busy) throw new UserError(`data directory ${dataDir} is in use by another running airlock serve (${file} is locked); stop it first`);
    if (err instanceof Database.SqliteError || (err as NodeJS.ErrnoException).code) throw new UserError(`lock ${file}: ${(err as Error).message}`);
    throw err;
  }
  const held = db;
  return {
    release: () => {
      if (held.open) held.close();
    },
  };
}
