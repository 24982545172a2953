// Fleets and promotion with the real engine: a staging stack of 2 instances and a production stack
// of 3, on one file backend, deployed over real SSH to the stand-in's releases on loopback.
// Production takes only what staging verified; a rollout goes one instance at a time and stops at
// the first failure; a preflight failure anywhere stops nothing; a stack of one moves to a list
// without a replacement. Each rollout's time is printed (`fleet-rollout N=<n>`) for the README.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PulumiStack } from "../../scripts/lib/pulumiCli";
import { EngineWorld, startEngineWorld } from "./engineWorld";
import { freePort } from "../fixtures/net";
import { startReleaseMirror, type ReleaseMirror } from "../fixtures/releases";
import { WrittenThread, dialectOf, readBodies, readyz, writeThread } from "../fixtures/progressdbApi";

interface Member {
  name: string;
  port: number;
  dir: string;
}

const url = (m: Member) => `http://127.0.0.1:${m.port}`;

/** The instances entry of `m`: its own port, dirs and service name on the one test host. */
function entry(m: Member, service: string) {
  return {
    name: m.name,
    healthUrl: url(m),
    deployment: { binary: { installDir: `${m.dir}/opt`, serviceName: service, listenAddr: `127.0.0.1:${m.port}` } },
    storage: { dbPath: `${m.dir}/data` },
  };
}

/** The local stack as a fleet: one line per stack-wide key, in JSON (which is YAML). */
function fleetStackFile(local: string, lines: Record<string, unknown>): string {
  const text = local.replace(/^(\s*progressdb:version:\s*).*$/m, '$1"0.2.0"').replace(/timeoutSeconds: 60/, "timeoutSeconds: 15");
  return `${text.trimEnd()}\n${Object.entries(lines).map(([k, v]) => `  progressdb:${k}: ${JSON.stringify(v)}`).join("\n")}\n`;
}

function pidOf(m: Member, service: string): string {
  return readFileSync(path.join(m.dir, "opt", "run", `${service}.pid`), "utf8").trim();
}

describe("fleets and promotion (real engine, stand-in releases)", { timeout: 300_000 }, () => {
  let w: EngineWorld;
  let broken: ReleaseMirror;
  let production: PulumiStack;
  let solo: PulumiStack;
  let local = "";
  const staging: Member[] = [];
  const prod: Member[] = [];
  const written = new Map<string, WrittenThread>();
  const service = (stack: string, m: Member) => `pdb-${stack}-${m.name}`;
  const api = (m: Member, version: string) => ({ url: url(m), dialect: dialectOf(version), backendKey: w.secrets.apiKey });
  const outputsOf = async (stack: PulumiStack) => (await stack.outputs()) as unknown as Record<string, unknown>;
  const versionOf = async (m: Member) => (await readyz(url(m))).version?.replace(/^v/, "");
  const rollout = async (stack: PulumiStack, n: number, what: string, opts: { allowFailure?: boolean } = {}) => {
    const up = await stack.up([], opts);
    console.log(`fleet-rollout N=${n} ${what}: ${(up.ms / 1000).toFixed(1)} s (exit ${up.code})`);
    return up;
  };

  beforeAll(async () => {
    const members = async (names: string[], into: Member[], stack: string) => {
      for (const name of names) into.push({ name, port: await freePort(), dir: `${stack}-${name}` });
    };
    w = await startEngineWorld({
      versions: ["0.2.0", "0.2.1", "0.2.2"],
      stackName: "staging",
      stackFile: async (text, ctx) => {
        local = text;
        await members(["a", "b"], staging, path.join(ctx.root, "host-staging"));
        return fleetStackFile(text, { instances: staging.map((m) => entry(m, service("staging", m))) });
      },
    });
    await members(["a", "b", "c"], prod, path.join(w.root, "host-production"));
    broken = await startReleaseMirror({ versions: ["0.2.0", { version: "0.2.1", fault: "never-ready" }] });
    const stackOn = async (name: string, text: string) => {
      const s = new PulumiStack({ workDir: path.join(w.root, "pulumi"), stack: name, passphrase: w.secrets.passphrase, onOutput: (l) => w.log.push(l) });
      await s.init(text);
      await s.set("progressdb:sshPrivateKey", w.sshd.privateKey, { secret: true });
      await s.set("progressdb:s3AccessKeyId", w.minio.accessKeyId, { secret: true });
      await s.set("progressdb:s3SecretAccessKey", w.minio.secretAccessKey, { secret: true });
      for (const k of ["kmsMasterKeyHex", "apiKey", "adminApiKey", "signingKey"] as const) await s.set(`progressdb:${k}`, w.secrets[k], { secret: true });
      return s;
    };
    production = await stackOn(
      "production",
      fleetStackFile(local, {
        instances: prod.map((m) => entry(m, service("production", m))),
        promotion: { requireVerifiedBy: "organization/progressdb/staging" },
        rollout: { canaryPauseSeconds: 2 },
      }),
    );
    // A stack of one, as every stack was before fleets: the local stack on its own port and dirs.
    const soloPort = await freePort();
    solo = await stackOn(
      "solo",
      fleetStackFile(local, {}).replaceAll(`127.0.0.1:${new URL(w.url).port}`, `127.0.0.1:${soloPort}`).replaceAll(path.join(w.root, "host"), path.join(w.root, "host-solo")),
    );
  });
  afterAll(async () => {
    await w?.stop();
    await broken?.stop();
  });

  test("staging deploys its 2 instances at 0.2.0 and verifies it", async () => {
    expect((await rollout(w.stack, 2, "deploy 0.2.0")).code).toBe(0);
    const out = await outputsOf(w.stack);
    expect(out.verifiedVersions).toEqual(["0.2.0"]);
    expect(out.fleet).toEqual({ version: "0.2.0", instances: ["a 0.2.0", "b 0.2.0"] });
    for (const m of staging) expect(await versionOf(m)).toBe("0.2.0");
  });

  test("production deploys 0.2.0, which staging verified", async () => {
    expect((await rollout(production, 3, "deploy 0.2.0")).code).toBe(0);
    for (const m of prod) {
      expect(await versionOf(m)).toBe("0.2.0");
      written.set(m.name, await writeThread(api(m, "0.2.0"), 2, `fleet-${m.name}`));
    }
  });

  test("production refuses a version staging has not verified: preview fails, naming the key, the stack and what it verified", async () => {
    production.setVersionLine("0.2.1");
    const preview = await production.preview([], { allowFailure: true });
    expect(preview.code).not.toBe(0);
    expect(preview.stdout + preview.stderr).toContain(
      "progressdb:version 0.2.1 has not been verified by organization/progressdb/staging (progressdb:promotion.requireVerifiedBy): it has verified 0.2.0. Nothing was changed.",
    );
  });

  test("staging upgrades to 0.2.1 one instance at a time; each instance's backup is under its own key", async () => {
    w.stack.setVersionLine("0.2.1");
    const mark = w.log.length;
    expect((await rollout(w.stack, 2, "upgrade 0.2.0 → 0.2.1")).code).toBe(0);
    const out = await outputsOf(w.stack);
    expect(out.verifiedVersions).toEqual(["0.2.0", "0.2.1"]);
    const instances = out.instances as Record<string, { version: string; previousVersion: string; backupUri: string; backupSha256: string; healthStatus: string }>;
    for (const m of staging) {
      expect(instances[m.name]).toMatchObject({ version: "0.2.1", previousVersion: "0.2.0", healthStatus: "healthy", backupUri: expect.stringContaining(`/staging/${m.name}/`) });
      expect(instances[m.name].backupSha256).toMatch(/^[0-9a-f]{64}$/);
    }
    // Instance a was committed on 0.2.1 before anything of b was read or stopped.
    const log = w.log.slice(mark);
    const aDone = log.findIndex((l) => /progressdb-a-finalize-commit\b.*\b(created|replaced|updated)\b/.test(l));
    const bStarts = log.findIndex((l) => /progressdb-b-snapshot\b.*\b(creating|replacing)\b/.test(l));
    expect(aDone).toBeGreaterThanOrEqual(0);
    expect(bStarts).toBeGreaterThan(aDone);
  });

  test("a preflight failure on instance 3 stops nothing anywhere", async () => {
    const pids = prod.map((m) => pidOf(m, service("production", m)));
    const objects = (await w.backupObjects()).filter((k) => k.includes("/production/")).length;
    await production.set("progressdb:instances[2].deployment.binary.artifactUrl", `${broken.baseUrl}/missing/{version}/progressdb_{version}_linux_{arch}.tar.gz`, { path: true });
    const up = await production.up([], { allowFailure: true });
    expect(up.code).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/progressdb-c-preflight-check/);
    expect(prod.map((m) => pidOf(m, service("production", m)))).toEqual(pids);
    for (const m of prod) expect(await versionOf(m)).toBe("0.2.0");
    expect((await w.backupObjects()).filter((k) => k.includes("/production/")).length).toBe(objects);
    await production.run(["config", "rm", "--path", "progressdb:instances[2].deployment.binary.artifactUrl"]);
  });

  test("a rollout where instance 2's new version never becomes ready: 1 upgraded, 2 reverted and running, 3 untouched, the error names 2", async () => {
    await production.set("progressdb:instances[1].deployment.binary.artifactUrl", `${broken.baseUrl}/{version}/progressdb_{version}_linux_{arch}.tar.gz`, { path: true });
    await production.set("progressdb:instances[1].deployment.binary.checksumsUrl", `${broken.baseUrl}/{version}/checksums.txt`, { path: true });
    const [, b, c] = prod;
    const cPid = pidOf(c, service("production", c));
    const up = await rollout(production, 3, "upgrade 0.2.0 → 0.2.1, instance b never ready", { allowFailure: true });
    expect(up.code).not.toBe(0);
    const text = up.stdout + up.stderr;
    expect(text).toMatch(/progressdb-b-deploy-install/);
    expect(text).toContain("rollout of 0.2.1 over a → b → c, one at a time: a runs 0.2.1; b failed and is back on the version it ran; not touched, on the version each ran: c.");
    expect(text).toMatch(/AUTO-REVERTED/);
    expect(await versionOf(prod[0])).toBe("0.2.1");
    expect(await versionOf(b)).toBe("0.2.0");
    expect(await versionOf(c)).toBe("0.2.0");
    expect(pidOf(c, service("production", c))).toBe(cPid);
    for (const m of prod) expect(await readBodies(api(m, "0.2.0"), written.get(m.name)!)).toEqual(written.get(m.name)!.bodies);
  });

  test("the mixed fleet: reverting the line is refused for the instance that runs 0.2.1, though the outputs still say 0.2.0", async () => {
    production.setVersionLine("0.2.0");
    const preview = await production.preview([], { allowFailure: true });
    expect(preview.code).not.toBe(0);
    expect(preview.stdout + preview.stderr).toMatch(/instance "a": runs 0\.2\.1, though the stack's last outputs say 0\.2\.0 \(an earlier rollout stopped part-way\)\. progressdb:version 0\.2\.0 is lower than the deployed 0\.2\.1/);
    production.setVersionLine("0.2.1");
  });

  test("after the fix, a re-run continues at instance 2 and converges", async () => {
    const aPid = pidOf(prod[0], service("production", prod[0]));
    await production.run(["config", "rm", "--path", "progressdb:instances[1].deployment.binary.artifactUrl"]);
    await production.run(["config", "rm", "--path", "progressdb:instances[1].deployment.binary.checksumsUrl"]);
    expect((await rollout(production, 2, "re-run after the fix (b and c)")).code).toBe(0);
    expect(pidOf(prod[0], service("production", prod[0]))).toBe(aPid);
    const out = await outputsOf(production);
    expect(out.fleet).toEqual({ version: "0.2.1", instances: ["a 0.2.1", "b 0.2.1", "c 0.2.1"] });
    expect(out.verifiedVersions).toEqual(["0.2.0", "0.2.1"]);
    for (const m of prod) {
      expect(await versionOf(m)).toBe("0.2.1");
      expect(await readBodies(api(m, "0.2.1"), written.get(m.name)!)).toEqual(written.get(m.name)!.bodies);
    }
    expect((await production.preview(["--expect-no-changes"])).code).toBe(0);
  });

  test("rollout times: staging then production to 0.2.2", async () => {
    w.stack.setVersionLine("0.2.2");
    expect((await rollout(w.stack, 2, "upgrade 0.2.1 → 0.2.2")).code).toBe(0);
    production.setVersionLine("0.2.2");
    expect((await rollout(production, 3, "upgrade 0.2.1 → 0.2.2")).code).toBe(0);
    for (const m of prod) expect(await versionOf(m)).toBe("0.2.2");
  });

  test("a stack of one moves to an instances list without a replacement, then upgrades as a fleet of one", async () => {
    expect((await solo.up()).code).toBe(0);
    const before = await outputsOf(solo);
    expect(before).toMatchObject({ version: "0.2.0", instances: { default: { version: "0.2.0" } } });
    const soloUrl = String((before.instances as Record<string, { versionProof: string }>).default.versionProof);
    expect(soloUrl).toMatch(/readyz/);
    const stateBefore = await solo.exportState();
    const names = (state: string) =>
      ((JSON.parse(state) as { deployment: { resources: Array<{ urn: string; custom?: boolean; type: string }> } }).deployment.resources ?? [])
        .filter((r) => !r.type.startsWith("pulumi:"))
        .map((r) => r.urn.split("::").pop()!);
    const text = readFileSync(solo.configFile, "utf8");
    const port = /listenAddr: 127\.0\.0\.1:(\d+)/.exec(text)![1];
    await solo.set("progressdb:instances[0].name", "one", { path: true });
    await solo.set("progressdb:instances[0].healthUrl", `http://127.0.0.1:${port}`, { path: true });
    const preview = await solo.preview(["--json"]);
    const steps = (JSON.parse(preview.stdout) as { steps: Array<{ op: string; urn: string }> }).steps;
    // Every resource keeps its state: the alias maps the old names onto the new ones.
    expect(steps.filter((s) => !["same", "read", "update"].includes(s.op)).map((s) => `${s.op} ${s.urn.split("::").pop()}`)).toEqual([]);
    solo.setVersionLine("0.2.1");
    expect((await rollout(solo, 1, "upgrade 0.2.0 → 0.2.1")).code).toBe(0);
    const out = await outputsOf(solo);
    expect(out.instances).toMatchObject({ one: { version: "0.2.1", previousVersion: "0.2.0" } });
    // The same resources, under their new names.
    const after = names(await solo.exportState());
    expect(after.map((n) => n.replace(/^progressdb-one/, "progressdb")).sort()).toEqual(names(stateBefore).sort());
    expect(after.filter((n) => n.startsWith("progressdb-one")).length).toBeGreaterThan(5);
  });
});
