// The same cycle on the REAL ProgressDB release archives (0.1.2 and 0.2.1,
// with the 0.2.1 prgcli), run whenever they are here: PDB_RELEASES_DIR, or
// ../shared/progressdb-releases beside the project (CI has it). Skipped,
// loudly, on a fresh clone without them.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { EngineWorld, secretLeaks, startEngineWorld } from "./engineWorld";
import { WrittenThread, readBodies, readyz, waitForBodies, writeThread } from "../fixtures/progressdbApi";
import { realReleasesDir } from "../fixtures/releases";

const dir = realReleasesDir();
if (!dir) {
  console.warn(
    "\n\n*** SKIPPING the real-release e2e: no release archives. Set PDB_RELEASES_DIR=<dir> with <dir>/<version>/progressdb_<version>_linux_amd64.tar.gz and checksums.txt (see README) ***\n",
  );
}

describe.skipIf(!dir)(`the local stack on the real releases in ${dir} (real engine)`, { timeout: 240_000 }, () => {
  let w: EngineWorld;
  let thread: WrittenThread;

  beforeAll(async () => {
    w = await startEngineWorld({ fromDir: dir!, stackName: "real" });
    // The real 0.1.2 seals each message with a random nonce, and the real 0.2.1 prgcli drops the
    // ~1 in 128 whose ciphertext looks like JSON (pinned in tests/contract): an encrypted crossing's
    // outcome would be chance. Without the KMS every assertion below is deterministic; the encrypted
    // crossing runs on the stand-in (tests/e2e/upgrade.e2e.test.ts, tests/integration/migration.test.ts).
    await w.stack.set("progressdb:kms.mode", "disabled", { path: true });
  });
  afterAll(async () => {
    await w?.stop();
  });

  test("deploys the real 0.1.2: version proved by the binary's identity, smoke test through /v1", async () => {
    expect((await w.stack.up()).code).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
    expect(out.versionProof).toMatch(/^host: pid \d+ listening on port \d+ runs .*\/releases\/0\.1\.2\/progressdb \(sha256 [0-9a-f]{64}/);
    expect((await readyz(w.url)).status).toBe(401);
    thread = await writeThread(w.api("0.1.2"), 2);
  });

  test("0.1.2 → 0.2.1: the real prgcli duplicates every message, the continuity gate catches it, 0.1.2 is back with its data", async () => {
    w.stack.setVersionLine("0.2.1");
    const up = await w.stack.up([], { allowFailure: true });
    expect(up.code).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/0\.2\.1 serves 4 messages in thread '[^']+' where 0\.1\.2 served 2: duplicated by the migration/);
    expect(up.stdout + up.stderr).toMatch(/AUTO-REVERTED: 0\.1\.2 runs again on its own data/);
    expect((await readyz(w.url)).status).toBe(401);
    expect(await readBodies(w.api("0.1.2"), thread)).toEqual(thread.bodies);
  });

  test("with the gate off, the crossing goes through: the real 0.2.1 serves the migrated thread (duplicated), the old dir is kept", async () => {
    await w.stack.set("progressdb:health.dataContinuity", "false", { path: true });
    expect((await w.stack.up()).code).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.2.1", healthStatus: "healthy", dataContinuity: expect.stringMatching(/^skipped/) });
    expect(out.versionProof).toMatch(/^readyz reported "v0\.2\.1"/);
    expect(out.keptData.version).toBe("0.1.2");
    const served = await waitForBodies(w.api("0.2.1"), thread, 4);
    expect(served).toHaveLength(4);
    expect([...new Set(served.map((b) => JSON.stringify(b)))].sort()).toEqual(thread.bodies.map((b) => JSON.stringify(b)).sort());
  });

  test("reverting the line runs the real 0.1.2 on its kept directory, with its data", async () => {
    w.stack.setVersionLine("0.1.2");
    expect((await w.stack.up()).code).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
    expect(await readBodies(w.api("0.1.2"), thread)).toEqual(thread.bodies);
  });

  test("no secret outside the 0600 configs: state, CLI output, host files (crash dumps included)", async () => {
    expect(await secretLeaks(w)).toEqual({ inState: [], inOutput: [], inFiles: [], configModes: [0o600] });
  });
});
