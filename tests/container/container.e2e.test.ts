// Container mode end to end, for real: the real `pulumi` CLI drives the
// program in container mode against each container engine here, podman's
// Docker-compatible API socket and Debian's dockerd (the same tests for both),
// with images built here from the ProgressDB stand-in and shaped like the real
// ones (uid 1000, /home/progressdb, VOLUME /data, the release's own CMD, tags
// v<version>), the host steps over real SSH to this machine (the "docker
// host"), backups into MinIO, and the HealthCheck against the container's
// published port. Deploy 0.1.2; cross to 0.2.1 (migrated with prgcli on the
// docker host, in <dbPath>/progressdb, the database behind /data/progressdb);
// an image that cannot be pulled; a broken version and the rollback by
// reverting the line; then issue #12's container items: a config-only
// replacement gives the service its SIGTERM grace, a container stopped outside
// Pulumi, and `pulumi destroy` leaving the database running.
//
// The command and docker resource providers are the stand-ins in
// tools/providers (the real ones are not served by the Go module proxy
// reachable here), built and installed by scripts/tools.sh and held to upstream
// by tests/contract/providers.contract.test.ts. The provider publishes ports
// with HostIp 0.0.0.0 as upstream does; podman 4.3 mishandles that, so the
// provider talks to it through the Docker-faithful proxy in ./podman.ts.
// dockerd (./dockerd.ts) is spoken to directly.
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test, type TestContext } from "vitest";
import { REPO, toolsEnv, type CliResult } from "../../scripts/lib/pulumiCli";
import { minioUnavailable } from "../fixtures/minio";
import { run } from "../fixtures/net";
import { readBodies, readyz, waitForBodies, writeThread, type WrittenThread } from "../fixtures/progressdbApi";
import { PULUMI, startEngineWorld, type EngineWorld } from "../e2e/engineWorld";
import { dockerdUnavailable, startDockerd } from "./dockerd";
import { IMAGE, probeRun, type ContainerEngine } from "./engine";
import { podmanUnavailable, startPodman } from "./podman";

/** One `pulumi up` here is ~20-60 s; a failing one waits out the HealthCheck timeout. */
const TEST_TIMEOUT = 300_000;
/** The HealthCheck's budget in this stack (Pulumi.local.yaml has 60 s): a broken version fails after it. */
const HEALTH_TIMEOUT_S = 20;
/** The stop timeout the program gives the container (components/containerDeployment.ts). */
const STOP_TIMEOUT_S = 30;

/** The stand-in provider plugin `name` that scripts/tools.sh installs into the CLI driver's PULUMI_HOME. */
function plugin(name: "command" | "docker"): string | undefined {
  const plugins = path.join(toolsEnv().PULUMI_HOME!, "plugins");
  if (!existsSync(plugins)) return undefined;
  const dir = readdirSync(plugins).find((d) => new RegExp(`^resource-${name}-v[0-9.]+$`).test(d) && existsSync(path.join(plugins, d, `pulumi-resource-${name}`)));
  return dir ? path.join(plugins, dir, `pulumi-resource-${name}`) : undefined;
}

function why(engineUnavailable: () => string | undefined): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing (run scripts/tools.sh)`;
  for (const name of ["command", "docker"] as const) {
    if (!plugin(name)) return `the ${name} provider is not installed in ${toolsEnv().PULUMI_HOME}/plugins (run scripts/tools.sh)`;
  }
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/aws"]) if (!existsSync(f)) return `${f} is missing (scripts/setup.sh installs it)`;
  return engineUnavailable() ?? minioUnavailable();
}

const ENGINES = [
  { kind: "podman", start: startPodman, unavailable: why(podmanUnavailable) },
  { kind: "dockerd", start: startDockerd, unavailable: why(dockerdUnavailable) },
] as const;
for (const e of ENGINES) {
  if (!e.unavailable) continue;
  // CI installs both engines (scripts/setup.sh): there, a missing one is a failure, not a skip.
  if (process.env.CI === "true") throw new Error(`tests/container/container.e2e.test.ts cannot run on ${e.kind} under CI: ${e.unavailable}`);
  console.warn(`\n\n*** SKIPPING tests/container/container.e2e.test.ts on ${e.kind}: ${e.unavailable} ***\n`);
}

const text = (r: CliResult) => r.stdout + r.stderr;
function lastLines(s: string, n: number): string {
  return s.trim().split("\n").slice(-n).join("\n");
}

interface StateResource {
  type: string;
  urn: string;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

interface Inspect {
  Id: string;
  /** The container's log file (podman's k8s-file, dockerd's json-file). */
  LogPath?: string;
  State: { Running: boolean; Status: string; ExitCode: number; Pid: number };
  Config: { Labels: Record<string, string>; Env: string[]; Cmd: string[]; User: string; WorkingDir: string; StopTimeout?: number; StopSignal?: string };
}

describe.each(ENGINES)("container mode against $kind's Docker API (real engine)", ({ kind, start, unavailable }) => {
  /** Where every pulumi output of the run is also written, for a human to read after a failure. */
  const DEBUG_LOG = path.join(REPO, ".state", `container-e2e-${kind}.log`);
  let w: EngineWorld;
  let engine: ContainerEngine;
  let dataDir: string;
  let at012: WrittenThread;
  let at021: WrittenThread;
  let runtimeError: string | undefined;
  /** Each `pulumi up` this suite ran: its result and the version line it ran with (what `stack history` must show). */
  const ups: Array<[string, string]> = [];
  const name = `progressdb-e2e-${kind}-${process.pid}`;

  beforeAll(async () => {
    mkdirSync(path.dirname(DEBUG_LOG), { recursive: true });
    writeFileSync(DEBUG_LOG, "");
    if (unavailable) return;
    try {
      engine = await start();
      // The mirror serves what the host steps download (prgcli for the crossing); the images are built here.
      await Promise.all(["0.1.2", "0.2.1", { version: "0.2.2", fault: "exit-at-start" as const }].map((v) => engine.buildImage(v)));
      runtimeError = await probeRun(engine, `${IMAGE}:v0.2.1`);
    } catch (e) {
      runtimeError = (e as Error).message;
    }
    if (runtimeError) {
      // CI installs and can run both engines (scripts/setup.sh): there, not running is a failure.
      if (process.env.CI === "true") throw new Error(`${kind} is installed but cannot run a container here:\n${runtimeError}`);
      console.warn(`\n\n*** SKIPPING tests/container/container.e2e.test.ts on ${kind}: it is installed but cannot run a container here:\n${runtimeError}\n***\n`);
      return;
    }
    w = await startEngineWorld({
      stackName: "container",
      versions: ["0.1.2", "0.2.1"],
      stackFile: (local, ctx) =>
        local
          .replace("    mode: binary\n", "    mode: container\n")
          .replace(
            "  progressdb:storage:",
            [
              "    container:",
              `      image: ${IMAGE}`,
              `      dockerHost: ${engine.dockerHost}`,
              `      name: ${name}`,
              "      ports:",
              "        - internal: 8080",
              `          external: ${ctx.servicePort}`,
              '      restart: "no"',
              // The stand-in images are FROM scratch: no shell for a CMD-SHELL check (the real ones have curl).
              "      healthcheck: []",
              "  progressdb:storage:",
            ].join("\n"),
          )
          .replace("timeoutSeconds: 60", `timeoutSeconds: ${HEALTH_TIMEOUT_S}`),
    });
    dataDir = w.dbPath;
    expect(readFileSync(w.stack.configFile, "utf8")).toContain("mode: container");
  }, 900_000);

  afterAll(async () => {
    await engine?.stop();
    await w?.stop();
  }, 120_000);

  /** Skips (loudly, in the report) when the engine is missing or cannot run a container here. */
  const live = (ctx: TestContext) => {
    if (unavailable) ctx.skip(`${kind}: ${unavailable}`);
    if (runtimeError) ctx.skip(`${kind} cannot run a container here: ${runtimeError}`);
  };

  /** "<op> <name>" for each step the engine started, in order, from `pulumi up --json` events. */
  function stepOrder(events: string): string[] {
    return events
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { resourcePreEvent?: { metadata: { op: string; urn: string } } })
      .filter((e) => e.resourcePreEvent && e.resourcePreEvent.metadata.op !== "same")
      .map((e) => `${e.resourcePreEvent!.metadata.op} ${e.resourcePreEvent!.metadata.urn.split("::").pop()}`);
  }

  async function state(): Promise<StateResource[]> {
    return (JSON.parse(await w.stack.exportState()) as { deployment: { resources?: StateResource[] } }).deployment.resources ?? [];
  }

  async function inspect(ref = name): Promise<Inspect | undefined> {
    const r = await engine.cli(["container", "inspect", ref]);
    if (r.code !== 0) return undefined;
    return (JSON.parse(r.stdout) as Inspect[])[0];
  }

  /** `pulumi up --json`: the steps in the order the engine started them; the result carries the diagnostics as text. */
  async function upJson(what: string): Promise<{ r: CliResult; order: string[] }> {
    const raw = await w.stack.up(["--json"], { allowFailure: true });
    const diagnostics = raw.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => (JSON.parse(l) as { diagnosticEvent?: { message: string; severity: string } }).diagnosticEvent)
      .filter((d) => d && d.severity !== "debug")
      .map((d) => `${d!.severity}: ${d!.message.trimEnd()}`)
      .join("\n");
    const r = record(what, { ...raw, stdout: diagnostics });
    return { r, order: stepOrder(raw.stdout) };
  }

  /** Every CLI result also goes to DEBUG_LOG, for a human to read after a failure; each up is noted in `ups`. */
  function record(what: string, r: CliResult, result = r.code === 0 ? "succeeded" : "failed"): CliResult {
    writeFileSync(DEBUG_LOG, `\n===== ${what} (exit ${r.code}, ${r.ms} ms)\n${r.stdout}\n--- stderr\n${r.stderr}\n`, { flag: "a" });
    if (/^up\b/.test(what)) ups.push([result, /progressdb:version:\s*"([^"]+)"/.exec(readFileSync(w.stack.configFile, "utf8"))![1]]);
    return r;
  }

  /**
   * After a repair that re-ran the chain at the same version, the next `pulumi up --expect-no-changes`
   * must exit 0. Known program bug (reported): in container mode the `previousVersion` output is the
   * backup's `fromVersion`, which a same-version re-run makes equal to the version itself; the next
   * run then passes another `baselineVersion` to the HealthCheck (an update, and the finalize step
   * again). Tolerated here only in that exact form, and the up after it must be a no-op.
   */
  async function expectSettles(what: string): Promise<void> {
    const raw = await w.stack.up(["--expect-no-changes", "--json"], { allowFailure: true });
    // With changes proposed, --expect-no-changes still applies them and exits non-zero; the history says "succeeded".
    const proposed = raw.code !== 0 && /no changes were expected for update but changes were proposed/.test(text(raw));
    record("up --expect-no-changes", { ...raw, stdout: raw.code === 0 ? "" : raw.stdout.slice(-20_000) }, raw.code === 0 || proposed ? "succeeded" : "failed");
    if (raw.code === 0) return;
    expect(proposed, lastLines(text(raw), 30)).toBe(true);
    const changed = raw.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => (JSON.parse(l) as { resourcePreEvent?: { metadata: { op: string; urn: string; diffs?: string[] } } }).resourcePreEvent?.metadata)
      .filter((m) => m && m.op !== "same" && m.op !== "read")
      .map((m) => `${m!.urn.split("::").pop()} ${m!.op}`);
    console.warn(`after ${what}, the next up was not a no-op (the previousVersion bug, see expectSettles): ${JSON.stringify(changed)}`);
    expect(changed.length).toBeGreaterThan(0);
    // Only the HealthCheck (a new baselineVersion) and the finalize step keyed on its run.
    expect(changed.filter((c) => !/^progressdb-health update$|^progressdb-finalize-commit (replace|create-replacement|delete-replaced)$/.test(c))).toEqual([]);
    expect(record("up --expect-no-changes", await w.stack.up(["--expect-no-changes"], { allowFailure: true })).code).toBe(0);
  }

  test("up at 0.1.2: the v0.1.2 image, the config in the mount (0600, uid 1000, no secret in the env), the 0.1 database in <dbPath>/progressdb", async (ctx) => {
    live(ctx);
    const up = record("up", await w.stack.up([], { allowFailure: true }));
    expect(up.code, lastLines(text(up), 40)).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.1.2", healthStatus: "healthy", imageRef: `${IMAGE}:v0.1.2` });
    // 0.1.2 has no /readyz: its version is proved by the container the program created.
    expect((await readyz(w.url)).status).toBe(401);
    expect(out.versionProof).toMatch(new RegExp(`^host: container ${name} \\([0-9a-f]{64}\\) runs ${IMAGE}:v0\\.1\\.2 \\(sha256:[0-9a-f]{64}\\), labelled progressdb\\.version=0\\.1\\.2$`));

    const resources = await state();
    expect(resources.find((r) => r.type === "docker:index/remoteImage:RemoteImage")!.inputs).toMatchObject({ name: `${IMAGE}:v0.1.2`, keepLocally: true });
    const c = (await inspect())!;
    expect(resources.find((r) => r.type === "docker:index/container:Container")!.id).toBe(c.Id);
    expect(c.State.Running).toBe(true);
    expect(c.Config).toMatchObject({ User: "progressdb", WorkingDir: "/home/progressdb", Cmd: ["--config", "/data/config.yaml"], StopTimeout: STOP_TIMEOUT_S });
    expect(c.Config.Labels).toMatchObject({ "progressdb.version": "0.1.2", "progressdb.image": `${IMAGE}:v0.1.2` });
    for (const s of w.secretValues()) expect(c.Config.Env.join("\n")).not.toContain(s);
    // The process itself, as the kernel sees it: the image's entrypoint and CMD, uid/gid 1000, /data mounted.
    const proc = `/proc/${c.State.Pid}`;
    expect(readFileSync(`${proc}/cmdline`, "utf8").split("\0").filter(Boolean)).toEqual(["/usr/local/bin/progressdb", "--config", "/data/config.yaml"]);
    expect(readFileSync(`${proc}/status`, "utf8")).toMatch(/^Uid:\s+1000\s+1000\s+1000\s+1000\n+Gid:\s+1000\s+1000\s+1000\s+1000$/m);
    expect(readFileSync(`${proc}/mountinfo`, "utf8").split("\n").map((l) => l.split(" ")[4])).toContain("/data");

    // The rendered config sits at the mount root (/data/config.yaml), 0600, owned by the image's user.
    const config = path.join(dataDir, "config.yaml");
    const st = statSync(config);
    expect({ mode: st.mode & 0o777, uid: st.uid, gid: st.gid }).toEqual({ mode: 0o600, uid: 1000, gid: 1000 });
    expect(readFileSync(config, "utf8")).toContain('db_path: "/data/progressdb"');
    // The 0.1 database (a Pebble DB at its root) is <dbPath>/progressdb on the host, owned by uid 1000.
    expect(existsSync(path.join(dataDir, "progressdb", "CURRENT"))).toBe(true);
    expect(statSync(path.join(dataDir, "progressdb")).uid).toBe(1000);
    const exported = await w.stack.exportState();
    for (const s of w.secretValues()) expect(exported).not.toContain(s);
    at012 = await writeThread(w.api("0.1.2"), 3);
  }, TEST_TIMEOUT);

  test("up at 0.2.1 crosses the data format: backup, then prgcli on the docker host over <dbPath>/progressdb (old dir kept), then the v0.2.1 container; the 0.1.2 data is served", async (ctx) => {
    live(ctx);
    const before = await w.backupObjects();
    const oldId = (await inspect())!.Id;
    w.stack.setVersionLine("0.2.1");
    const preview = JSON.parse((await w.stack.preview(["--json"])).stdout) as { steps: Array<{ op: string; urn: string }> };
    expect(preview.steps.filter((s) => s.op !== "same").map((s) => `${s.op} ${s.urn.split("::").pop()}`)).toEqual(
      expect.arrayContaining(["replace progressdb-image-pull", "replace progressdb-backup-upload", "create progressdb-migrate-data", "replace progressdb-deploy-container"]),
    );

    const { r: up, order } = await upJson("up-0.2.1");
    expect(up.code, lastLines(text(up), 40)).toBe(0);
    console.log(`steps of the crossing, in order:\n  ${order.join("\n  ")}`);
    const at = (s: string) => order.indexOf(s);
    expect(at("create-replacement progressdb-image-pull")).toBeGreaterThanOrEqual(0);
    expect(at("create-replacement progressdb-image-pull")).toBeLessThan(at("create-replacement progressdb-backup-upload"));
    expect(at("create-replacement progressdb-backup-upload")).toBeLessThan(at("create progressdb-migrate-data"));
    expect(at("create progressdb-migrate-data")).toBeLessThan(at("delete-replaced progressdb-deploy-container"));
    expect(at("delete-replaced progressdb-deploy-container")).toBeLessThan(at("create-replacement progressdb-deploy-container"));

    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.2.1", previousVersion: "0.1.2", healthStatus: "healthy", dataContinuity: "passed" });
    expect(out.versionProof).toMatch(/^readyz reported "v0\.2\.1"/);
    expect(out).toMatchObject({ imageRef: `${IMAGE}:v0.2.1`, previousImageRef: `${IMAGE}:v0.1.2` });
    // The migration ran on the database behind /data/progressdb, and kept the 0.1.2 dir beside it, in the mount.
    const kept = path.join(dataDir, "progressdb.v0.1.2-kept-before-v0.2.1");
    expect(out.keptData).toMatchObject({ path: kept, version: "0.1.2" });
    expect(existsSync(path.join(kept, "CURRENT"))).toBe(true);
    expect(existsSync(path.join(dataDir, "progressdb", "store"))).toBe(true);
    expect(existsSync(path.join(dataDir, "progressdb", "CURRENT"))).toBe(false);
    expect(statSync(path.join(dataDir, "progressdb", "store")).uid).toBe(1000);
    expect(text(up)).toMatch(new RegExp(`stopping ${name} \\(0\\.1\\.2\\) for a consistent backup`));

    // The backup: what the container saw at /data/progressdb, never the config file with the keys.
    expect(out.backupUri).toMatch(new RegExp(`^s3://${w.minio.bucket}/progressdb-backups/container/\\d{8}T\\d{6}Z-0\\.1\\.2-to-0\\.2\\.1\\.tar\\.(zst|gz)$`));
    const key = out.backupUri.replace(`s3://${w.minio.bucket}/`, "");
    expect((await w.backupObjects()).filter((k) => !before.includes(k)).sort()).toEqual([key, `${key}.sha256`].sort());
    // zstd when the host has it (the test hosts do), else gzip: tar reads either from the file.
    const local = path.join(w.root, `backup-0.1.2.${key.endsWith(".zst") ? "tar.zst" : "tar.gz"}`);
    expect((await w.minio.aws(["s3", "cp", "--only-show-errors", `s3://${w.minio.bucket}/${key}`, local])).code).toBe(0);
    expect(createHash("sha256").update(readFileSync(local)).digest("hex")).toBe(out.backupSha256);
    const listing = (await run("tar", ["-tf", local])).stdout;
    expect(listing).toContain(`${dataDir.replace(/^\//, "")}/progressdb/CURRENT`);
    expect(listing).not.toContain("config.yaml");

    const c = (await inspect())!;
    expect(c.Id).not.toBe(oldId);
    expect(c.Config.Labels["progressdb.version"]).toBe("0.2.1");
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await waitForBodies(w.api("0.2.1"), at012, at012.bodies.length)).toEqual(at012.bodies);
    // keepLocally: the previous image stays on the host for a rollback.
    expect(await engine.localTags()).toEqual(expect.arrayContaining([`${IMAGE}:v0.1.2`, `${IMAGE}:v0.2.1`]));
    at021 = await writeThread(w.api("0.2.1"), 2);
  }, TEST_TIMEOUT);

  test("a second up with no change does nothing: same container, no backup", async (ctx) => {
    live(ctx);
    const id = (await inspect())!.Id;
    const objects = await w.backupObjects();
    const up = record("up --expect-no-changes", await w.stack.up(["--expect-no-changes"], { allowFailure: true }));
    expect(up.code, lastLines(text(up), 30)).toBe(0);
    expect((await inspect())!.Id).toBe(id);
    expect(await w.backupObjects()).toEqual(objects);
  }, TEST_TIMEOUT);

  test("a version whose image cannot be pulled fails before anything stops: no backup, the running container untouched", async (ctx) => {
    live(ctx);
    const before = (await inspect())!;
    const objects = await w.backupObjects();
    w.stack.setVersionLine("0.3.0"); // no such image on the host, and no registry reachable
    const failed = record("up", await w.stack.up([], { allowFailure: true }));
    expect(failed.code).not.toBe(0);
    console.log(`the failed up (0.3.0) ends with:\n${lastLines(text(failed), 6)}`);
    expect(text(failed)).toMatch(/pulling docker\.io\/progressdb\/progressdb:v0\.3\.0/);
    const after = (await inspect())!;
    expect(after.Id).toBe(before.Id);
    expect(after.State.Running).toBe(true);
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await w.backupObjects()).toEqual(objects);
  }, TEST_TIMEOUT);

  test("a broken 0.2.2 (exits at start) fails `pulumi up` at the HealthCheck; reverting the line to 0.2.1 restores service from the kept image, data intact", async (ctx) => {
    live(ctx);
    w.stack.setVersionLine("0.2.2");
    const failed = record("up", await w.stack.up([], { allowFailure: true }));
    expect(failed.code).not.toBe(0);
    console.log(`the failed up (0.2.2) ends with:\n${lastLines(text(failed), 8)}`);
    expect(text(failed)).toMatch(/progressdb-health/);
    // The broken container was created (the engine has it in state); the service is down.
    const broken = (await inspect())!;
    expect(broken.Config.Labels["progressdb.version"]).toBe("0.2.2");
    expect(broken.State.Running).toBe(false);
    expect((await readyz(w.url)).status).toBe(0);
    expect((await w.stack.outputs()).version).toBe("0.2.1");
    expect(await engine.localTags()).toContain(`${IMAGE}:v0.2.1`);

    // The operator's way back: revert the one line, run up again.
    w.stack.setVersionLine("0.2.1");
    const up = record("up", await w.stack.up([], { allowFailure: true }));
    expect(up.code, lastLines(text(up), 40)).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect((await inspect())!.Config.Labels["progressdb.version"]).toBe("0.2.1");
    expect(await readBodies(w.api("0.2.1"), at012)).toEqual(at012.bodies);
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
  }, TEST_TIMEOUT);

  test("a config-only change re-creates the container without a backup, and the old one gets SIGTERM and its grace: 0.2.x drains, logs `shutdown: complete` and exits 0", async (ctx) => {
    live(ctx);
    const old = (await inspect())!;
    const objects = await w.backupObjects();
    const since = new Date(Date.now() - 1000).toISOString();
    // Follow the old container's log until it is gone: it says how it ended.
    const logs = followLogs(engine, old);
    await w.stack.set("progressdb:service.rateLimit.rps", "77", { path: true });
    const { r: up, order } = await upJson("up-config-change");
    const oldLog = await logs.done();
    expect(up.code, lastLines(text(up), 40)).toBe(0);
    expect(order).toEqual(expect.arrayContaining(["replace progressdb-deploy-config", "delete-replaced progressdb-deploy-container", "create-replacement progressdb-deploy-container"]));
    expect(order.filter((s) => /backup|migrate|preflight/.test(s))).toEqual([]);
    expect(await w.backupObjects()).toEqual(objects);
    expect(oldLog).toMatch(/signal_received/);
    expect(oldLog).toMatch(/shutdown: complete/);
    // The engine's own record: the old container died with exit code 0 (SIGKILL would be 137).
    expect(await engine.diedExitCodes(old.Id, since)).toEqual(["0"]);
    const c = (await inspect())!;
    expect(c.Id).not.toBe(old.Id);
    expect(readFileSync(path.join(dataDir, "config.yaml"), "utf8")).toMatch(/rps: 77/);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
    expect((record("up --expect-no-changes", await w.stack.up(["--expect-no-changes"], { allowFailure: true }))).code).toBe(0);
  }, TEST_TIMEOUT);

  test("a container stopped outside Pulumi is started again by the next plain `pulumi up` (the drift probe re-runs the chain), data intact", async (ctx) => {
    live(ctx);
    const id = (await inspect())!.Id;
    expect((await engine.cli(["stop", "-t", "10", name])).code).toBe(0);
    expect((await inspect())!.State.Running).toBe(false);
    const preview = record("preview after an outside stop", await w.stack.preview(["--diff"], { allowFailure: true }));
    expect(preview.code).toBe(0);
    expect(text(preview)).toMatch(/progressdb-probe/);
    const up = record("up after an outside stop", await w.stack.up([], { allowFailure: true }));
    expect(up.code, lastLines(text(up), 40)).toBe(0);
    const after = (await inspect())!;
    expect(after.State.Running).toBe(true);
    expect(after.Id).not.toBe(id);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
    await expectSettles("the repair of an outside stop");
  }, TEST_TIMEOUT);

  test("a container stopped outside Pulumi, then `pulumi refresh`: the HealthCheck says unhealthy, the docker provider keeps the container in state with mustRun false, and the next up brings the service back", async (ctx) => {
    live(ctx);
    const id = (await inspect())!.Id;
    expect((await engine.cli(["stop", "-t", "10", name])).code).toBe(0);
    const refresh = record("refresh", await w.stack.run(["refresh", "--yes", "--skip-preview"], { allowFailure: true }));
    expect(refresh.code, lastLines(text(refresh), 30)).toBe(0);
    const resources = await state();
    expect(resources.find((r) => r.type.endsWith("health:HealthCheck"))!.outputs).toMatchObject({ status: "unhealthy" });
    // Upstream's read (kreuzwerker v4.5.0 resourceDockerContainerRead): a stopped container that
    // must run stays in state, with mustRun false, so that the next update starts it.
    const inState = resources.find((r) => r.type === "docker:index/container:Container");
    expect(inState?.id).toBe(id);
    expect(inState?.outputs).toMatchObject({ mustRun: false });
    expect((await inspect())!.State.Running).toBe(false);
    const up = record("up after the refresh", await w.stack.up([], { allowFailure: true }));
    console.log(`the up after the refresh (exit ${up.code}) ends with:\n${lastLines(text(up), 12)}`);
    expect(up.code, lastLines(text(up), 30)).toBe(0);
    // The unhealthy HealthCheck re-runs the chain (a new backup run re-creates the container), so
    // the container is replaced rather than only started; either way it runs.
    expect((await inspect())!.State.Running).toBe(true);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
    await expectSettles("the repair after a refresh");
  }, TEST_TIMEOUT);

  test("`pulumi destroy` leaves the database running: the container is not deleted (deletedWith the docker provider), the data stays on the mount", async (ctx) => {
    live(ctx);
    const before = (await inspect())!;
    const destroy = record("destroy", await w.stack.run(["destroy", "--yes", "--skip-preview"], { allowFailure: true }));
    expect(destroy.code, lastLines(text(destroy), 30)).toBe(0);
    expect(await state()).toEqual([]);
    const after = (await inspect())!;
    expect(after.Id).toBe(before.Id);
    expect(after.State.Running).toBe(true);
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
  }, TEST_TIMEOUT);

  test("stack history shows each update this suite ran, with its version and result", async (ctx) => {
    live(ctx);
    // (PulumiStack.history() shows the CLI's default page of 10 entries.)
    const all = JSON.parse((await w.stack.run(["stack", "history", "--json", "--show-secrets=false", "--page-size", "1000"])).stdout) as Array<{
      kind: string;
      result: string;
      config?: Record<string, { value?: string }>;
    }>;
    const updates = all
      .filter((h) => h.kind === "update")
      .reverse()
      .map((u) => [u.result, u.config?.["progressdb:version"]?.value]);
    expect(updates).toEqual(ups);
  }, TEST_TIMEOUT);
});

/**
 * The container's log up to its end. Its log file (podman's k8s-file, dockerd's json-file) is opened
 * now and read once the container is gone: a removed container's file stays readable through the
 * open fd, where `logs -f` may miss the last lines when the removal follows the exit at once.
 */
function followLogs(p: ContainerEngine, c: Inspect): { done(): Promise<string> } {
  const fd = c.LogPath && existsSync(c.LogPath) ? openSync(c.LogPath, "r") : undefined;
  let out = "";
  const child: ChildProcess = p.spawn(["logs", "-f", c.Id]);
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  return {
    async done() {
      const timer = setTimeout(() => child.kill("SIGTERM"), 60_000);
      await exited;
      clearTimeout(timer);
      if (fd === undefined) return out;
      try {
        return readFileSync(fd, "utf8");
      } finally {
        closeSync(fd);
      }
    },
  };
}
