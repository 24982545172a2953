/**
 * Benchmark (opt-in): backup throughput of backup.sh (stream mode) and of the
 * snapshot's upload (offsite.sh) vs a raw `tar c dir | gzip | aws s3 cp - s3://…`
 * of the same 200 MB data dir, against MinIO on loopback, all run through the
 * same SSH session type. Each backup is complete: tar | zstd -T0 with the sha256
 * and size measured in the stream, the object's size checked in S3, its sidecar.
 *
 *   PDB_BENCH=1 npx vitest run tests/integration/bench-backup.test.ts
 *
 * Data: 140 MB of random (incompressible) files + 60 MB of repetitive JSON
 * lines (compressible). PDB_BENCH_MB changes the total size.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderBackupScript, renderOffsiteScript, renderSecretsStdin, shQuote } from "../../components/hostScripts";
import { runRemote } from "../fixtures/sshd";
import { newHost, skipMessage, startWorld, type TestHost, type World } from "./world";

const enabled = !!process.env.PDB_BENCH;
const skip = enabled ? skipMessage("backup benchmark") : "set PDB_BENCH=1 to run";

function makeData(dir: string, totalMb: number): number {
  fs.mkdirSync(path.join(dir, "store"), { recursive: true });
  fs.mkdirSync(path.join(dir, "wal"), { recursive: true });
  const randomMb = Math.round(totalMb * 0.7);
  let bytes = 0;
  for (let i = 0; i < randomMb / 10; i++) {
    const b = crypto.randomBytes(10 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, "store", `${String(i).padStart(6, "0")}.sst`), b);
    bytes += b.length;
  }
  const line = (i: number) => `{"op":"message","key":"t:${String(i).padStart(20, "0")}","author":"user-${i % 97}","body":{"text":"hello world ${i % 1000}"}}\n`;
  const compressibleMb = totalMb - randomMb;
  for (let f = 0; f < compressibleMb / 10; f++) {
    const chunks: string[] = [];
    let size = 0;
    for (let i = 0; size < 10 * 1024 * 1024; i++) {
      const l = line(f * 1_000_000 + i);
      chunks.push(l);
      size += l.length;
    }
    const b = Buffer.from(chunks.join(""));
    fs.writeFileSync(path.join(dir, "wal", `${String(f).padStart(6, "0")}.wal`), b);
    bytes += b.length;
  }
  return bytes;
}

describe.skipIf(!!skip)("backup throughput (benchmark)", () => {
  let w: World;
  let h: TestHost;
  let dataBytes = 0;
  const results: Record<string, { seconds: number; mbPerS: number }> = {};

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.2.1"] });
    h = await newHost(w, "bench", "process");
    dataBytes = makeData(h.params.dbPath, Number(process.env.PDB_BENCH_MB ?? 200));
  }, 300_000);
  afterAll(async () => {
    console.log(`\nbackup benchmark, data dir ${(dataBytes / 1e6).toFixed(1)} MB (70% random, 30% JSON lines), MinIO on loopback:`);
    for (const [k, v] of Object.entries(results)) console.log(`  ${k.padEnd(48)} ${v.seconds.toFixed(2)} s  ${v.mbPerS.toFixed(1)} MB/s`);
    await w?.stop();
  }, 120_000);

  const stdin = () => renderSecretsStdin(w.secrets);

  async function timed(name: string, script: string): Promise<string> {
    const t0 = performance.now();
    const r = await runRemote(w.sshd, script, { stdin: stdin(), timeoutMs: 600_000 });
    const seconds = (performance.now() - t0) / 1000;
    expect(r.code, r.stderr).toBe(0);
    results[name] = { seconds, mbPerS: dataBytes / 1e6 / seconds };
    return r.stdout;
  }

  it("raw: tar c dir | gzip | aws s3 cp - (upload only, no verify)", async () => {
    // Same credentials path as the script (stdin, no argv), then the raw pipeline.
    const key = `raw/${Date.now()}.tar.gz`;
    const script = [
      "set -eu",
      "IFS== read -r _ AWS_ACCESS_KEY_ID; IFS== read -r _ AWS_SECRET_ACCESS_KEY; export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY",
      `tar -C / -cf - ${shQuote(h.params.dbPath.slice(1))} | gzip | /usr/bin/aws --endpoint-url ${w.minio.endpoint} --region ${w.minio.region} s3 cp - s3://${w.minio.bucket}/${key}`,
    ].join("\n");
    await timed("raw tar | gzip | aws s3 cp -", script);
  });

  it("backup.sh, stream mode (tar | zstd -T0 | sha256 | aws s3 cp -, size verified, sidecar)", async () => {
    // Each run its own run key: a repeated key replays the recorded result without backing up.
    await timed("backup.sh stream (verified)", renderBackupScript({ host: h.params, version: "0.2.2", runKey: "bench-stream", stack: "bench", s3: w.s3 }));
    expect(results["backup.sh stream (verified)"].mbPerS).toBeGreaterThanOrEqual(0.9 * results["raw tar | gzip | aws s3 cp -"].mbPerS);
  });

  it("snapshot mode: the warm copy (rsync, nothing stopped), then the upload of the snapshot (offsite.sh)", async () => {
    await timed("backup.sh snapshot: warm copy (rsync)", renderBackupScript({ host: h.params, version: "0.2.3", runKey: "bench-snap", stack: "bench", s3: w.s3, mode: "snapshot" }));
    // No service runs on this host, so the copy is complete at once; the install, which would start
    // the service, releases it for the upload when it ends: done here in its place.
    const run = path.join(h.params.installDir, "run");
    fs.renameSync(path.join(run, "snapshot.status-sealed"), path.join(run, "snapshot.status-released"));
    await timed("offsite.sh: upload of the snapshot (verified)", renderOffsiteScript({ host: h.params, version: "0.2.3", runKey: "bench-snap", stack: "bench", s3: w.s3 }));
    expect(results["offsite.sh: upload of the snapshot (verified)"].mbPerS).toBeGreaterThanOrEqual(0.9 * results["raw tar | gzip | aws s3 cp -"].mbPerS);
  });
});
