/** Upgrade 0.1.2 → 0.2.0 under a real supervisord (its own config and socket). */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../fixtures/net";
import {
  backup,
  install,
  newHost,
  preflight,
  provision,
  readMessages,
  readyz,
  skipMessage,
  startWorld,
  type TestHost,
  type World,
  writeSampleData,
} from "./world";

const skip = skipMessage("supervisor integration tests") ?? (fs.existsSync("/usr/bin/supervisord") ? undefined : "supervisord missing");

describe.skipIf(!!skip)("upgrade under supervisor", () => {
  let w: World;
  let h: TestHost;

  beforeAll(async () => {
    w = await startWorld({ supervisor: true, versions: ["0.1.2", "0.2.0"] });
    h = await newHost(w, "sup", "supervisor");
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
  }, 120_000);

  async function status(): Promise<string> {
    return (await w.supervisor!.ctl("status", h.params.serviceName)).stdout;
  }

  /** supervisord reports STARTING until the program has lived `startsecs`, even once it answers. */
  async function becomesRunning(): Promise<void> {
    await waitFor(`${h.params.serviceName} RUNNING under supervisord`, async () => /RUNNING/.test(await status()), 10_000);
  }

  it("first install writes the program conf and supervisord runs 0.1.2", async () => {
    await provision(w, h, "0.1.2");
    const conf = fs.readFileSync(path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`), "utf8");
    expect(conf).toContain(`[program:${h.params.serviceName}]`);
    expect(conf).not.toContain(h.kmsKeyHex);
    await becomesRunning();
    expect((await readyz(h)).body.version).toBe("0.1.2");
  });

  it("backup stops it through supervisorctl; install restarts it on 0.2.0 with the data intact", async () => {
    const data = await writeSampleData(h, 2);
    expect((await preflight(w, h, "0.2.0")).code).toBe(0);
    const b = await backup(w, h, "0.2.0");
    expect(b.code, b.stderr).toBe(0);
    expect(await status()).toMatch(/STOPPED/);
    const i = await install(w, h, "0.2.0");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json).toEqual({ version: "0.2.0", previousVersion: "0.1.2" });
    await becomesRunning();
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
    // supervisord's process really is the new binary, with the key only in its environment.
    const pid = Number(/pid (\d+)/.exec(await status())![1]);
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(path.join(h.params.installDir, "releases", "0.2.0", "progressdb"));
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")).not.toContain(h.kmsKeyHex);
    expect(fs.readFileSync(`/proc/${pid}/environ`, "utf8")).toContain(`PROGRESSDB_KMS_MASTER_KEY_HEX=${h.kmsKeyHex}`);
  });
});
