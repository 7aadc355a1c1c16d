// PGlite (PostgreSQL 17 in WebAssembly) with TimescaleDB's full (TSL) build,
// served over the PostgreSQL wire protocol: the `timescale` storage tier's
// SQL is proven against it (there is no TimescaleDB package for Debian 12).
//   node server.mjs PORT [DATA_DIR]
//
// Why not @electric-sql/pglite-socket's server as is: it hands every TCP read
// to PGlite as it comes, so a protocol message larger than one read (a big
// INSERT's parameters) reaches PGlite cut in two and kills it, and reads of
// one connection can overlap. This server frames messages first and feeds
// PGlite whole messages, one connection at a time (PGlite is one backend;
// other clients wait their turn), and cleans the session up between clients.
// Clients must connect with sslmode=disable: an SSLRequest is not answered.
import net from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import { timescaledb } from '@electric-sql/pglite/timescaledb';

const port = parseInt(process.argv[2] ?? '5432', 10);
const dataDir = process.argv[3] ?? 'memory://';
const db = new PGlite(dataDir, { extensions: { timescaledb } });
await db.waitReady;

// Connections are served strictly one after the other.
let turn = Promise.resolve();

function serve(socket) {
  return new Promise((done) => {
    let buf = Buffer.alloc(0);
    let startup = true; // the first message has no type byte
    let work = Promise.resolve();
    let closed = false;
    const finish = async () => {
      if (closed) return;
      closed = true;
      await work.catch(() => {});
      // The next client must not inherit a transaction or prepared statements.
      try { await db.exec('ROLLBACK'); } catch { /* none open */ }
      try { await db.exec('DEALLOCATE ALL'); } catch { /* nothing to drop */ }
      done();
    };
    const whole = () => {
      let end = 0;
      for (;;) {
        const head = startup ? 0 : 1;
        if (buf.length < end + head + 4) break;
        const len = buf.readInt32BE(end + head);
        if (buf.length < end + head + len) break;
        end += head + len;
        startup = false;
      }
      const out = buf.subarray(0, end);
      buf = buf.subarray(end);
      return out;
    };
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const msgs = whole();
      if (msgs.length === 0) return;
      const copy = new Uint8Array(msgs);
      work = work.then(async () => {
        const reply = await db.execProtocolRaw(copy);
        if (reply.length > 0 && socket.writable) socket.write(Buffer.from(reply));
      }).catch((e) => {
        console.error('protocol error:', e);
        socket.destroy();
      });
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.pause();
  turn = turn.then(() => {
    if (socket.destroyed) return;
    socket.resume();
    return serve(socket);
  });
});
server.listen(port, '127.0.0.1', () => {
  console.log(`pglite-timescale listening on 127.0.0.1:${port}`);
});
const stop = async () => {
  server.close();
  await db.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
