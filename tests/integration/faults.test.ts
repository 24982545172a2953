/**
 * Failure paths: each leaves the running service alone (or restores it on the
 * version it was running) and says exactly what failed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  install,
  newHost,
  pidOf,
  preflight,
  provision,
  readMessages,
  readyz,
  skipMessage,
  startWorld,
  writeSampleData,
  type TestHost,
  type World,
} from "./world";
import { freePort } from "../fixtures/net";

const skip = skipMessage("faults integration tests");

describe.skipIf(!!skip)("failure paths", () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld({
      versions: ["0.1.2", "0.2.0", { version: "0.2.2", fault: "exit-at-start" }, { version: "0.2.3", fault: "wrong-version" }],
    });
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
  }, 120_000);
  afterEach(() => w?.mirror.reset());

  async function runningHost(name: string, version = "0.1.2"): Promise<TestHost> {
    const h = await newHost(w, name, "process");
    await provision(w, h, version);
    expect((await readyz(h)).body.version).toBe(version);
    return h;
  }

  it("checksum mismatch: preflight fails naming the URL and both sha256s; the service never stopped", async () => {
    const h = await runningHost("badsum");
    const pid = pidOf(h);
    w.mirror.corruptChecksum("0.2.0");
    const rel = w.mirror.release("0.2.0");
    const r = await preflight(w, h, "0.2.0");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`sha256 mismatch for ${rel.archiveName} downloaded from ${rel.artifactUrl}`);
    const checksums = await (await fetch(rel.checksumsUrl)).text();
    const corrupt = checksums.split("\n")[0].split(/\s+/)[0];
    expect(r.stderr).toContain(`expected ${corrupt} (from ${rel.checksumsUrl}), actual ${rel.sha256}`);
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.0", rel.archiveName))).toBe(false);
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("0.1.2");
  });

  it("pinned sha256 mismatch fails the same way", async () => {
    const h = await runningHost("pinned");
    const r = await preflight(w, h, "0.2.0", { sha256: "ab".repeat(32) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`expected ${"ab".repeat(32)} (from the pinned sha256), actual ${w.mirror.release("0.2.0").sha256}`);
  });

  it("404 artifact: preflight fails naming the URL; the service never stopped", async () => {
    const h = await runningHost("notfound");
    const pid = pidOf(h);
    w.mirror.notFound("0.2.0");
    const rel = w.mirror.release("0.2.0");
    const r = await preflight(w, h, "0.2.0");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`download of ${rel.artifactUrl} failed`);
    expect(r.stderr).toContain("404");
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("0.1.2");
  });

  it("S3 unreachable: preflight says so; a backup that loses S3 restarts the old version (exit 3)", async () => {
    const h = await runningHost("s3down");
    const data = await writeSampleData(h, 1);
    const pid = pidOf(h);
    const dead = { ...w.s3, endpoint: `http://127.0.0.1:${await freePort()}` };
    const p = await preflight(w, h, "0.2.0", { s3: dead });
    expect(p.code).toBe(1);
    expect(p.stderr).toContain(`S3 bucket s3://${w.s3.bucket} is not reachable (endpoint ${dead.endpoint}`);
    expect(p.stderr).toMatch(/Could not connect|connect/i);
    expect(pidOf(h)).toBe(pid);

    const b = await backup(w, h, "0.2.0", { s3: dead });
    expect(b.code).toBe(3);
    expect(b.stdout).toBe("");
    expect(b.stderr).toContain("backup stream failed at upload");
    expect(b.stderr).toContain("restarting it on the release it was running (0.1.2)");
    expect(b.stderr).toContain("is running again on 0.1.2");
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.1.2" });
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
  });

  it("bad S3 credentials: preflight fails with the S3 error; a backup restarts the old version", async () => {
    const h = await runningHost("badcreds");
    const pid = pidOf(h);
    const secrets = { awsAccessKeyId: w.secrets.awsAccessKeyId, awsSecretAccessKey: "wrong-secret-value" };
    const p = await preflight(w, h, "0.2.0", { secrets });
    expect(p.code).toBe(1);
    expect(p.stderr).toContain(`S3 bucket s3://${w.s3.bucket} is not reachable`);
    expect(p.stderr).toMatch(/403|Forbidden|SignatureDoesNotMatch/);
    expect(pidOf(h)).toBe(pid);

    const b = await backup(w, h, "0.2.0", { secrets });
    expect(b.code).toBe(3);
    expect(b.stderr).toMatch(/SignatureDoesNotMatch|AccessDenied|Forbidden|403/);
    expect((await readyz(h)).body.version).toBe("0.1.2");
    expect(pidOf(h)).not.toBe(pid); // restarted by the trap
  });

  it("missing tools and low disk: preflight names them and changes nothing", async () => {
    const h = await runningHost("tools");
    const pid = pidOf(h);
    const noAws = { ...h, params: { ...h.params, awsCli: "/nonexistent/bin/aws" } };
    const t = await preflight(w, noAws, "0.2.0");
    expect(t.code).toBe(1);
    expect(t.stderr).toContain("required tools missing on the host: aws(/nonexistent/bin/aws)");
    const d = await preflight(w, h, "0.2.0", { minFreeMb: 999_999_999 });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(new RegExp(`not enough free disk; ${h.params.installDir}: \\d+ MB free, 999999999 MB required`));
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.0"))).toBe(false);
    expect(pidOf(h)).toBe(pid);
  });

  it("a fresh host with no data: backup is skipped", async () => {
    const h = await newHost(w, "fresh", "process");
    const b = await backup(w, h, "0.1.2");
    expect(b.code, b.stderr).toBe(0);
    expect(b.json).toMatchObject({ skipped: true, fromVersion: "" });
  });

  it("install without a staged archive fails before touching anything", async () => {
    const h = await runningHost("nostage");
    const pid = pidOf(h);
    const r = await install(w, h, "0.2.0");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("run the preflight for 0.2.0 first");
    expect(pidOf(h)).toBe(pid);
  });

  it("a new version that exits at start is auto-reverted (exit 5) and the old one serves again", async () => {
    const h = await runningHost("revert", "0.2.0");
    const data = await writeSampleData(h, 2);
    expect((await preflight(w, h, "0.2.2", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.2.2", { autoRevertSeconds: 10, backupUri: "s3://b/k" });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`0.2.2 did not report ready on ${h.url}/readyz within 10s`);
    expect(r.stderr).toContain("AUTO-REVERTED: current -> releases/0.2.0, and 0.2.0 is running and ready");
    expect(r.stderr).toContain(path.join(h.params.installDir, "logs", `${h.params.serviceName}.log`));
    expect(r.stderr).toContain("standin fault: exit-at-start");
    expect(fs.readlinkSync(path.join(h.params.installDir, "current"))).toBe(path.join(h.params.installDir, "releases", "0.2.0"));
    expect((await readyz(h)).body.version).toBe("0.2.0");
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
  });

  it("a version that migrated the data and never reports ready: revert cannot help (exit 6, says restore)", async () => {
    const h = await runningHost("migrated");
    expect((await preflight(w, h, "0.2.3", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.2.3", { autoRevertSeconds: 4, backupUri: "s3://bucket/key.tar.gz" });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain("0.2.3 did not report ready");
    expect(r.stderr).toContain('"version":"0.2.3-wrong"');
    expect(r.stderr).toContain("0.1.2 did not become ready either");
    expect(r.stderr).toContain("restore the pre-upgrade backup. The pre-upgrade backup is s3://bucket/key.tar.gz.");
  });
});
