/**
 * Benchmark (opt-in): how long an upgrade keeps ProgressDB unreachable, with
 * 10 MB and with 2 GB of data, against the bare stop + start of the same
 * release. A prober asks /healthz every 20 ms; the downtime is the longest gap
 * between two answers. The upgrade is the program's binary-mode sequence of
 * host steps over SSH: preflight, the snapshot backup (warm copy), the offsite
 * upload started beside the install (as the engine runs it), the install
 * (stop, cold delta, switch, start).
 *
 *   PDB_BENCH=1 npx vitest run tests/integration/bench-downtime.test.ts
 *
 * PDB_BENCH_SIZES_MB changes the sizes (default "10 2000").
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shQuote } from "../../components/hostScripts";
import { repoRoot } from "../fixtures/net";
import { runRemote } from "../fixtures/sshd";
import { backup, install, newHost, offsite, preflight, provision, skipMessage, startWorld, type TestHost, type World } from "./world";

const enabled = !!process.env.PDB_BENCH;
const skip = enabled ? skipMessage("downtime benchmark") : "set PDB_BENCH=1 to run";
const SIZES = (process.env.PDB_BENCH_SIZES_MB ?? "10 2000").split(/\s+/).filter(Boolean).map(Number);

/** Polls /healthz every 20 ms until stopped; the longest time without an answer. */
function prober(url: string): { stop(): Promise<{ gapMs: number; probes: number }> } {
  let stopped = false;
  let lastOk = performance.now();
  let gapMs = 0;
  let probes = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now();
      const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
      probes++;
      const now = performance.now();
      if (ok) {
        gapMs = Math.max(gapMs, now - lastOk);
        lastOk = now;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 20 - (now - t))));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { gapMs, probes };
    },
  };
}

describe.skipIf(!!skip)("upgrade downtime (benchmark)", () => {
  let w: World;
  const rows: string[] = [];

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.2.1", "0.2.2", "0.2.3"] });
  }, 300_000);
  afterAll(async () => {
    console.log(`\nupgrade downtime, /healthz polled every 20 ms (process manager, stand-in 0.2.1 → 0.2.2, MinIO on loopback):\n${rows.join("\n")}`);
    await w?.stop();
  }, 300_000);

  /** The bare stop + start of the running release, with the program's own service functions. */
  function restartScript(h: TestHost): string {
    const p = h.params;
    const vars = {
      PDB_INSTALL_DIR: p.installDir,
      PDB_DB_PATH: p.dbPath,
      PDB_KMS_DATA_DIR: "",
      PDB_SERVICE_MANAGER: p.serviceManager,
      PDB_SERVICE_NAME: p.serviceName,
      PDB_SERVICE_USER: p.serviceUser ?? "progressdb",
      PDB_CONFIG_FILE: "",
      PDB_STOP_TIMEOUT: String(p.stopTimeoutSeconds ?? 30),
      PDB_SUPERVISORCTL_CONFIG: "",
    };
    const lib = fs.readFileSync(path.join(repoRoot, "components", "scripts", "lib.sh"), "utf8");
    return [...Object.entries(vars).map(([k, v]) => `${k}=${shQuote(v)}`), "set -eu", lib, "svc_stop", "svc_start", ""].join("\n");
  }

  for (const mb of SIZES) {
    it(`${mb} MB of data: the upgrade's downtime is at most 1.5 × the bare stop + start + 1 s`, { timeout: 900_000 }, async () => {
      const h = await newHost(w, `down${mb}`, "process");
      await provision(w, h, "0.2.1");
      // Incompressible files beside the service's own (it never reads them).
      const pad = path.join(h.params.dbPath, "bench");
      fs.mkdirSync(pad, { recursive: true });
      for (let i = 0; i < Math.ceil(mb / 64); i++) {
        execFileSync("sh", ["-c", `head -c ${Math.min(64, mb - i * 64)}M /dev/urandom > ${shQuote(path.join(pad, `${i}.sst`))}`]);
      }

      let p = prober(h.url);
      const r0 = await runRemote(w.sshd, restartScript(h), { timeoutMs: 120_000 });
      expect(r0.code, r0.stderr).toBe(0);
      await new Promise((r) => setTimeout(r, 1500));
      const bare = await p.stop();

      const t0 = performance.now();
      expect((await preflight(w, h, "0.2.2", { backupMode: "snapshot" })).code).toBe(0);
      const tb = performance.now();
      const b = await backup(w, h, "0.2.2", { mode: "snapshot" });
      expect(b.code, b.stderr).toBe(0);
      const tc = performance.now();
      p = prober(h.url);
      const upload = offsite(w, h, "0.2.2");
      const i = await install(w, h, "0.2.2");
      expect(i.code, i.stderr).toBe(0);
      const o = await upload;
      expect(o.code, o.stderr).toBe(0);
      const up = await p.stop();
      const t1 = performance.now();

      const limit = 1.5 * bare.gapMs + 1000;
      rows.push(
        `  ${String(mb).padStart(5)} MB: bare stop+start ${(bare.gapMs / 1000).toFixed(2)} s; upgrade ${(up.gapMs / 1000).toFixed(2)} s (limit ${(limit / 1000).toFixed(2)} s); ` +
          `warm copy ${((tc - tb) / 1000).toFixed(1)} s, install + upload ${((t1 - tc) / 1000).toFixed(1)} s, whole ${((t1 - t0) / 1000).toFixed(1)} s; backup ${(o.json!.size! / 1e6).toFixed(0)} MB`,
      );
      expect(up.gapMs).toBeLessThanOrEqual(limit);

      // For comparison: the same upgrade with the backup streamed while the service is stopped
      // (backup.offsiteBeforeStart: true, container mode, the fallback; how every upgrade worked before).
      expect((await preflight(w, h, "0.2.3", { backupMode: "stream" })).code).toBe(0);
      p = prober(h.url);
      const sb = await backup(w, h, "0.2.3", { mode: "stream" });
      expect(sb.code, sb.stderr).toBe(0);
      const si = await install(w, h, "0.2.3");
      expect(si.code, si.stderr).toBe(0);
      const streamed = await p.stop();
      rows.push(`         streamed backup (offsiteBeforeStart: true): downtime ${(streamed.gapMs / 1000).toFixed(2)} s`);
      fs.rmSync(pad, { recursive: true, force: true });
    });
  }
});
