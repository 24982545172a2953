/**
 * 0.1.2 → 0.2.1 under a real supervisord (its own config and socket): 0.1.2
 * proved by the identity of the binary supervisord runs, the backup and the
 * migration stopping it through supervisorctl, 0.2.1 serving the 0.1.2 data,
 * and no secret in the program conf or the service's environment.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../fixtures/net";
import {
  backup,
  install,
  migrate,
  newHost,
  preflight,
  provision,
  readByTitle,
  readyz,
  releaseDir,
  secretsOf,
  skipMessage,
  startWorld,
  stats,
  whoListens,
  writeSampleData,
  type Sample,
  type TestHost,
  type World,
} from "./world";

const skip = skipMessage("supervisor integration tests", fs.existsSync("/usr/bin/supervisord") ? undefined : "supervisord missing");

describe.skipIf(!!skip)("upgrade under supervisor", () => {
  let w: World;
  let h: TestHost;
  let data: Sample;

  beforeAll(async () => {
    w = await startWorld({ supervisor: true, versions: ["0.1.2", "0.2.1"] });
    h = await newHost(w, "sup", "supervisor");
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
  }, 120_000);

  async function status(): Promise<string> {
    return (await w.supervisor!.ctl("status", h.params.serviceName)).stdout;
  }

  /** supervisord reports STARTING until the program has lived `startsecs`, even once it answers. */
  async function becomesRunning(): Promise<number> {
    await waitFor(`${h.params.serviceName} RUNNING under supervisord`, async () => /RUNNING/.test(await status()), 10_000);
    return Number(/pid (\d+)/.exec(await status())![1]);
  }

  function assertClean(pid: number): void {
    const conf = fs.readFileSync(path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`), "utf8");
    const launcher = fs.readFileSync(path.join(h.params.installDir, "bin", `${h.params.serviceName}-launch`), "utf8");
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    for (const s of secretsOf(w, h)) {
      for (const [what, text] of Object.entries({ conf, launcher, environ, cmdline })) expect(text.includes(s), `${what}: ${s}`).toBe(false);
    }
    expect(environ.split("\0").filter(Boolean)).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    // supervisord (root) starts the launcher, which runs the release as the service's user.
    expect(fs.readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(new RegExp(`^Uid:\\s+${serviceUid()}\\s+${serviceUid()}\\s`, "m"));
  }

  /** The default service user (progressdb), which the first preflight creates if absent. */
  function serviceUid(): number {
    return Number(execFileSync("id", ["-u", "progressdb"], { encoding: "utf8" }));
  }

  /** Paths under the data dir that the service user does not own. */
  function notTheServices(): string {
    return execFileSync("find", [h.params.dbPath, "(", "!", "-user", "progressdb", "-o", "!", "-group", "progressdb", ")"], { encoding: "utf8" });
  }

  it("first install writes the program conf; supervisord runs 0.1.2, proved by the binary it runs", async () => {
    const i = await provision(w, h, "0.1.2");
    const conf = fs.readFileSync(path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`), "utf8");
    expect(conf).toContain(`[program:${h.params.serviceName}]`);
    const pid = await becomesRunning();
    const bin = path.join(releaseDir(h, "0.1.2"), "progressdb");
    expect(whoListens(h)).toMatchObject({ pid, exe: bin });
    expect(i.proof).toMatch(new RegExp(`^pid ${pid} listening on port ${h.port} runs ${bin} \\(sha256 [0-9a-f]{64}, equal to releases/0\\.1\\.2/progressdb`));
    expect((await readyz(h)).status).toBe(401);
    assertClean(pid);
    data = await writeSampleData(h, "0.1.2", 2, "under supervisor");
  });

  it("backup and migration stop it through supervisorctl; install restarts it on 0.2.1 with the 0.1.2 data", async () => {
    const p = await preflight(w, h, "0.2.1", { tool: true });
    expect(p.code, p.stderr).toBe(0);
    expect(p.json).toMatchObject({ layout: "root", plan: "migrate" });
    const b = await backup(w, h, "0.2.1");
    expect(b.code, b.stderr).toBe(0);
    expect(await status()).toMatch(/STOPPED/);
    const m = await migrate(w, h, "0.2.1", { expectThreads: 1 });
    expect(m.code, m.stderr).toBe(0);
    expect(m.json).toMatchObject({ migrated: true, threads: 1, messages: 2 });
    // prgcli ran as root; the migrated data it wrote is the service user's.
    expect(notTheServices()).toBe("");
    const i = await install(w, h, "0.2.1");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json).toEqual({ version: "0.2.1", previousVersion: "0.1.2", proof: '/readyz reports "v0.2.1"', switched: true });
    const pid = await becomesRunning();
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await readByTitle(h, "0.2.1", data.title)).toEqual(data.bodies);
    expect(await stats(h)).toEqual({ threads: 1, messages: 2 });
    // supervisord's process really is the new binary, with no secret in its environment or argv.
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(path.join(releaseDir(h, "0.2.1"), "progressdb"));
    assertClean(pid);
  });
});
