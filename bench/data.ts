// Realistic ProgressDB-like data for the benchmark: the 0.2.x data dir layout
// (store/ index/ wal/, as the stand-in creates it) filled with many Pebble-like
// files of mixed compressibility, not one zero-filled file:
//   store/*.sst, index/*.sst  tables of 2–64 MB: 32 KiB blocks, most of them
//                             "snappy-compressed" (random bytes: gzip gains
//                             nothing), the rest key/value text (sorted keys,
//                             JSON values with random ids and base64 bodies)
//   wal/*.log                 write-ahead logs: JSON message records (text only)
// Every text record carries fresh random bytes, so no block repeats and a
// compressor with a long window (zstd) gains no more than it would on real data.
// The stand-in ignores files it does not know, so the service starts on it as
// it would on a real data dir.
import { randomBytes } from "node:crypto";
import { chownSync, closeSync, mkdirSync, openSync, statSync, writeSync } from "node:fs";
import path from "node:path";

const MB = 1024 * 1024;
const BLOCK = 32 * 1024;
/** Share of the bytes in each kind of file. */
const SHARES = { store: 0.75, index: 0.1, wal: 0.15 } as const;
/** Share of an .sst's blocks that are compressed (incompressible) blocks. */
const COMPRESSED_BLOCKS = 0.7;
const SST_SIZES_MB = [2, 4, 8, 16, 32, 64];

let seq = 0;

/** One text block of about `size` bytes: sorted-looking keys and JSON values, each with random bytes. */
function textBlock(size: number, wal: boolean): Buffer {
  const rnd = randomBytes(size);
  const parts: string[] = [];
  let len = 0;
  let off = 0;
  while (len < size) {
    seq++;
    const id = rnd.toString("hex", off % (size - 8), (off % (size - 8)) + 8);
    const bodyLen = 24 + (rnd[off % size] % 120);
    const body = rnd.toString("base64", off % (size - bodyLen), (off % (size - bodyLen)) + bodyLen);
    off += 97;
    const thread = String(seq >> 6).padStart(20, "0");
    const rec = wal
      ? `{"op":"put","seq":${seq},"k":"t:${thread}:m:${String(seq).padStart(20, "0")}:${id}","v":{"author":"user-${seq % 997}","role":"user","body":"${body}","ts":${1_760_000_000_000 + seq}}}\n`
      : `t:${thread}:m:${String(seq).padStart(20, "0")}\u0000{"id":"${id}","author":"user-${seq % 997}","body":"${body}"}`;
    parts.push(rec);
    len += rec.length;
  }
  return Buffer.from(parts.join("")).subarray(0, size);
}

function writeFile(file: string, bytes: number, kind: "sst" | "log"): void {
  const fd = openSync(file, "w", 0o644);
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(BLOCK, bytes - done);
      const compressed = kind === "sst" && Math.random() < COMPRESSED_BLOCKS;
      const block = compressed ? randomBytes(n) : textBlock(BLOCK, kind === "log").subarray(0, n);
      writeSync(fd, block);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

export interface SeedResult {
  bytes: number;
  files: number;
}

/**
 * Adds about `totalMb` MB of Pebble-like files to the data dir `dbPath`, owned
 * like the dir itself (the service user). File numbers start high, past the
 * stand-in's own files.
 */
export function seedData(dbPath: string, totalMb: number): SeedResult {
  const owner = statSync(dbPath);
  const total = Math.round(totalMb * MB);
  const cap = Math.max(256 * 1024, Math.floor(total / 8));
  let files = 0;
  let bytes = 0;
  let n = 100_000;
  for (const [dir, share] of Object.entries(SHARES)) {
    const d = path.join(dbPath, dir);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    chownSync(d, owner.uid, owner.gid);
    let left = Math.round(total * share);
    for (let i = 0; left > 0; i++) {
      const want = dir === "wal" ? Math.min(64 * MB, cap) : Math.min(SST_SIZES_MB[i % SST_SIZES_MB.length] * MB, cap);
      const size = Math.min(want, left);
      const file = path.join(d, `${String(n++).padStart(6, "0")}.${dir === "wal" ? "log" : "sst"}`);
      writeFile(file, size, dir === "wal" ? "log" : "sst");
      chownSync(file, owner.uid, owner.gid);
      left -= size;
      bytes += size;
      files++;
    }
  }
  return { bytes, files };
}
