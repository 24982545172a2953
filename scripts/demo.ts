// `npm run demo`: the main job on the local stack with the real engine.
// Starts sshd, MinIO and a release mirror on loopback, deploys 0.1.2, writes
// data, upgrades to 0.2.1 by editing progressdb:version and running
// `pulumi up` (the data crosses the 0.1 → 0.2 format through prgcli, the old
// directory is kept, the continuity gate checks the data), then rolls back by
// reverting the line. The releases are the stand-in's (a test fixture that
// behaves like the real ones), or the real archives with `--real`
// (PDB_RELEASES_DIR or ../shared/progressdb-releases): on those, the real
// prgcli duplicates every message and the gate stops the upgrade.
import { existsSync, mkdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startEngineWorld } from "../tests/e2e/engineWorld";
import { readBodies, writeThread } from "../tests/fixtures/progressdbApi";
import { realReleasesDir } from "../tests/fixtures/releases";

const started = Date.now();
const step = (text: string) => console.log(`\n\x1b[1m▶ ${text}\x1b[0m  (${((Date.now() - started) / 1000).toFixed(1)} s)`);

/** Polls /healthz every 100 ms and records the longest run of failures: the downtime a client saw. */
function watchDowntime(url: string) {
  let stopped = false;
  let downSince: number | undefined;
  const windows: number[] = [];
  const loop = async () => {
    while (!stopped) {
      const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
      const now = Date.now();
      if (!ok && downSince === undefined) downSince = now;
      if (ok && downSince !== undefined) {
        windows.push(now - downSince);
        downSince = undefined;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const running = loop();
  return {
    async stop(): Promise<number> {
      stopped = true;
      await running;
      return Math.max(0, ...windows);
    },
  };
}

async function main(): Promise<void> {
  const real = process.argv.includes("--real");
  const fromDir = real ? realReleasesDir() : undefined;
  if (real && !fromDir) throw new Error("--real: no release archives (set PDB_RELEASES_DIR, or put them in ../shared/progressdb-releases)");
  // Under /tmp, not the clone: the service runs as its own user, who must be able to enter every
  // directory on the way to its data, and a clone under /root is closed to it.
  const workDir = path.join(os.tmpdir(), "progressdb-demo");
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });

  step(`Starting sshd, MinIO and a release mirror of the ${fromDir ? `real archives in ${fromDir}` : "stand-in's releases"} on 127.0.0.1`);
  const w = await startEngineWorld({ fromDir, versions: ["0.1.2", "0.2.1"], stackName: "local", root: workDir, onOutput: (l) => console.log(`  │ ${l}`) });
  const summary: string[] = [];
  try {
    step("pulumi up — deploy 0.1.2 (the stack file Pulumi.local.yaml, moved onto this run's ports)");
    await w.stack.up();
    let out = await w.stack.outputs();
    summary.push(`deployed ${out.version}; proved by ${out.versionProof}`);
    const thread = await writeThread(w.api("0.1.2"), 3);
    console.log(`  wrote thread '${thread.title}' with 3 messages through the 0.1.2 API`);

    step("Upgrade: progressdb:version 0.1.2 → 0.2.1 in the stack file, then pulumi preview and pulumi up");
    w.stack.setVersionLine("0.2.1");
    await w.stack.preview();
    const watch = watchDowntime(w.url);
    const upgrade = await w.stack.up([], { allowFailure: true });
    const down = await watch.stop();
    out = await w.stack.outputs();
    if (upgrade.code === 0) {
      const served = await readBodies(w.api("0.2.1"), thread);
      summary.push(
        `upgraded ${out.previousVersion} → ${out.version} in ${(upgrade.ms / 1000).toFixed(1)} s through the prgcli migration; downtime seen by a client polling every 100 ms: ${down} ms`,
        `0.2.1 serves the thread written at 0.1.2: ${JSON.stringify(served) === JSON.stringify(thread.bodies)}; data continuity: ${out.dataContinuity}`,
        `the 0.1.2 data is kept at ${out.keptData.path}; backup ${out.backupUri} (${out.backupSize} bytes)`,
      );
      step("Roll back: revert progressdb:version to 0.1.2 — 0.1.2 runs again on its kept directory");
      w.stack.setVersionLine("0.1.2");
      const rollbackWatch = watchDowntime(w.url);
      const rollback = await w.stack.up();
      const rollbackDown = await rollbackWatch.stop();
      const back = await readBodies(w.api("0.1.2"), thread);
      summary.push(
        `rolled back to ${(await w.stack.outputs()).version} in ${(rollback.ms / 1000).toFixed(1)} s; downtime ${rollbackDown} ms; data intact: ${JSON.stringify(back) === JSON.stringify(thread.bodies)}`,
      );
    } else {
      const why = (upgrade.stdout + upgrade.stderr).match(/data-continuity gate: [^\n]*/)?.[0] ?? `exit ${upgrade.code}`;
      const back = await readBodies(w.api("0.1.2"), thread);
      summary.push(`the upgrade was refused by the ${why.slice(0, 300)}`, `the instance runs ${out.version} again with its data intact: ${JSON.stringify(back) === JSON.stringify(thread.bodies)}`);
      step("Revert the line to 0.1.2: converges with no change to the data");
      w.stack.setVersionLine("0.1.2");
      await w.stack.up();
    }

    step("pulumi stack history");
    (await w.stack.updates()).forEach(([result, version], i) => summary.push(`history ${i + 1}: update ${result} at progressdb:version ${version}`));
  } finally {
    await w.stop();
  }
  step("Summary");
  for (const line of summary) console.log(`  • ${line}`);
  console.log(`  • total time ${((Date.now() - started) / 1000).toFixed(1)} s; servers stopped; state kept in ${workDir}/${existsSync(workDir) ? "" : " (gone)"}`);
}

main().catch((e: unknown) => {
  console.error(`\ndemo failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
