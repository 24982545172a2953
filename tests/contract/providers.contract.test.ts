// The provider stand-ins (tools/providers) held to upstream: each test pins one behaviour the
// program relies on, as the upstream source does it, by driving the plugin binary that
// scripts/tools.sh installs over gRPC the way the engine does (tests/contract/providerRpc.ts).
// Its comment names the upstream file it follows:
//   pulumi-command v1.2.1, provider/pkg/provider/remote/ (and pulumi-go-provider v1.3.0's infer,
//     which wires secretness between inputs and outputs);
//   pulumi-docker v5.1.0 (provider/resources.go) over kreuzwerker/terraform-provider-docker
//     v4.5.0, internal/provider/resource_docker_container{,_funcs,_structures}.go.
// The docker tests need podman's Docker API (tests/container/podman.ts) and skip loudly without it.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import path from "node:path";
import type http from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { freePort, run, sleep, tempDir, waitFor } from "../fixtures/net";
import { startSshd, type SshdHandle } from "../fixtures/sshd";
import { IMAGE, podmanUnavailable, startDockerFaithfulProxy, startPodman, type Podman } from "../container/podman";
import { commandStreams } from "../e2e/engineWorld";
import { ProviderPlugin, isSecret, pluginPath, secret, urnOf, type Props } from "./providerRpc";

const COMMAND = "command:remote:Command";
const CONTAINER = "docker:index/container:Container";

const commandPlugin = pluginPath("command");
const dockerPlugin = pluginPath("docker");
const noPlugins = !commandPlugin || !dockerPlugin ? "the provider stand-ins are not installed (run scripts/tools.sh)" : undefined;
const noSshd = !fs.existsSync("/usr/sbin/sshd") || process.getuid?.() !== 0 ? "sshd (/usr/sbin/sshd, as root) is needed" : undefined;
const noPodman = podmanUnavailable();
for (const [what, why] of [["all provider contract tests", noPlugins], ["command:remote contract tests", noSshd], ["docker contract tests", noPodman]] as const) {
  if (why) console.warn(`\n\n*** SKIPPING ${what} in tests/contract/providers.contract.test.ts: ${why} ***\n`);
}

/** A TCP listener on 127.0.0.1 that records when each connection arrives and what it does with it. */
async function tcpServer(onConn: (s: net.Socket) => void): Promise<{ port: number; arrivals: number[]; close(): Promise<void> }> {
  const arrivals: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    arrivals.push(Date.now());
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    onConn(s);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    port: (server.address() as net.AddressInfo).port,
    arrivals,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe.skipIf(!!(noPlugins ?? noSshd))("command:remote:Command (pulumi-command v1.2.1)", () => {
  let sshd: SshdHandle;
  let plugin: ProviderPlugin;
  let conn: Props;
  let n = 0;
  const urn = () => urnOf(COMMAND, `cmd${++n}`);

  beforeAll(async () => {
    sshd = await startSshd();
    plugin = await ProviderPlugin.start(commandPlugin!);
    await plugin.configure();
    conn = { host: sshd.host, port: sshd.port, user: sshd.user, privateKey: secret(sshd.privateKey), dialErrorLimit: 3, perDialTimeout: 10 };
  });
  afterAll(async () => {
    await plugin?.stop();
    await sshd?.stop();
  });

  // remote/commandOutputs.go (BaseOutputs set from plain strings) and pulumi-go-provider infer
  // (resource.go ensureDefaultSecrets: secretness flows only to the output of the same name):
  // stdout and stderr are plain in state even when stdin is secret. hostCommand.ts relies on it
  // (scriptResult), and the e2e secret scans (engineWorld.ts secretLeaks) rely on a secret in
  // them showing up in the state export. remote/command.go tags `connection` provider:"secret".
  test("stdout and stderr are not secret in state, even with a secret stdin; stdin and the connection are", async () => {
    const u = urn();
    const checked = await plugin.check(u, { connection: conn, create: "cat; echo out; echo err >&2", stdin: secret("PDB_X=1\n"), logging: "stderr" });
    expect(checked.failures).toEqual([]);
    expect(isSecret(checked.inputs.connection)).toBe(true);
    const { id, properties } = await plugin.create(u, checked.inputs);
    // remote/commandController.go: the id is resource.NewUniqueHex(name, 8, 0) (the program keys runs on it).
    expect(id).toMatch(new RegExp(`^cmd${n}[0-9a-f]{8}$`));
    expect(properties.stdout).toBe("PDB_X=1\nout");
    expect(properties.stderr).toBe("err");
    expect(isSecret(properties.stdin)).toBe(true);
  });

  // util/util.go LogOutput (InfoStatus: ephemeral) fed by remote/commandOutputs.go per `logging`
  // (remote/logging.go: unset logs both streams, secret inputs or not).
  test("output is logged line by line as ephemeral info status, only the streams `logging` names (unset: both)", async () => {
    const before = plugin.logs.length;
    const u1 = urn();
    await plugin.create(u1, { connection: conn, create: "echo to-stdout; echo to-stderr >&2", logging: "stderr" });
    const mine = (u: string) => plugin.logs.slice(before).filter((l) => l.urn === u);
    expect(mine(u1).map((l) => [l.message, l.ephemeral, l.severity])).toEqual([["to-stderr", true, "info"]]);
    const u2 = urn();
    await plugin.create(u2, { connection: conn, create: "echo a; echo b >&2", stdin: secret("k=v\n") });
    expect(mine(u2).map((l) => l.message).sort()).toEqual(["a", "b"]);
    expect(mine(u2).every((l) => l.ephemeral)).toBe(true);
  });

  // remote/commandOutputs.go: fmt.Errorf("%w: running %q:\n%s", err, cmd, stdout+stderr interleaved),
  // whatever `logging` says. (The program's scripts carry no secret in their text or output.)
  test("a failing command's error embeds the whole command text and both streams, even with logging none", async () => {
    const script = "echo visible-out; echo visible-err >&2; exit 3";
    const err = await plugin.create(urn(), { connection: conn, create: script, logging: "none" }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toContain(`Process exited with status 3: running ${JSON.stringify(script)}:\n`);
    expect(err).toContain("visible-out");
    expect(err).toContain("visible-err");
  });

  // remote/commandOutputs.go: session.Setenv for each `environment` variable; a refusal (sshd
  // without AcceptEnv, as here) logs an error and fails the step before the command runs.
  test("an environment variable the server refuses fails the step, and the command does not run", async () => {
    const marker = path.join(tempDir("cmd-env"), "ran");
    const before = plugin.logs.length;
    const u = urn();
    const err = await plugin.create(u, { connection: conn, create: `touch ${marker}`, environment: { PDB_FOO: "bar" } }).then(
      () => "created",
      (e: Error) => e.message,
    );
    expect(err).toMatch(/could not set environment variable "PDB_FOO"/);
    expect(fs.existsSync(marker)).toBe(false);
    expect(plugin.logs.slice(before).filter((l) => l.urn === u && l.severity === "error").map((l) => l.message).join("\n")).toMatch(/Unable to set 'PDB_FOO'/);
  });

  // remote/connection.go dialWithRetry over sdk go/common/util/retry.Until (100 ms, x1.5, max 5 s):
  // dialErrorLimit 3 (components/connection.ts) is 4 attempts 0.1/0.15/0.225 s apart, each
  // reported as ephemeral status, then "after 3 failed attempts: …".
  test("dialing makes dialErrorLimit+1 attempts with a 0.1 s x1.5 backoff, whatever the error", async () => {
    const srv = await tcpServer((s) => s.destroy());
    try {
      const before = plugin.logs.length;
      const u = urn();
      const t0 = Date.now();
      const err = await plugin.create(u, { connection: { ...conn, port: srv.port }, create: "true" }).then(
        () => "created",
        (e: Error) => e.message,
      );
      expect(err).toMatch(/^after 3 failed attempts: ssh: handshake failed: /);
      expect(srv.arrivals).toHaveLength(4);
      const gaps = srv.arrivals.slice(1).map((t, i) => t - srv.arrivals[i]);
      for (const [i, want] of [100, 150, 225].entries()) {
        expect(gaps[i]).toBeGreaterThanOrEqual(want - 10);
        expect(gaps[i]).toBeLessThan(want + 700); // (slack for a loaded 2-core machine; the old stand-in slept 1/2/3 s)
      }
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(plugin.logs.slice(before).filter((l) => l.urn === u).map((l) => [l.message, l.ephemeral])).toEqual([
        ["Dial 1/3 failed: retrying", true],
        ["Dial 2/3 failed: retrying", true],
        ["Dial 3/3 failed: retrying", true],
      ]);
    } finally {
      await srv.close();
    }
  });

  test("a refused authentication is retried like any other dial error", async () => {
    const dir = tempDir("cmd-key");
    const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "k")]);
    expect(r.status).toBe(0);
    const wrongKey = fs.readFileSync(path.join(dir, "k"), "utf8");
    const err = await plugin.create(urn(), { connection: { ...conn, privateKey: secret(wrongKey), dialErrorLimit: 1 }, create: "true" }).then(
      () => "created",
      (e: Error) => e.message,
    );
    expect(err).toMatch(/^after 1 failed attempts: ssh: handshake failed: ssh: unable to authenticate/);
  });

  // remote/connection.go Dial: ssh.Dial bounds the TCP dial with perDialTimeout and leaves the SSH
  // handshake unbounded (hence the program's own timeouts around its steps).
  test("perDialTimeout bounds the TCP dial only: a server that accepts and never speaks SSH holds the step", async () => {
    const srv = await tcpServer(() => undefined);
    const own = await ProviderPlugin.start(commandPlugin!);
    try {
      await own.configure();
      let settled = false;
      void own.create(urn(), { connection: { ...conn, port: srv.port, perDialTimeout: 1, dialErrorLimit: 0 }, create: "true" }).then(
        () => (settled = true),
        () => (settled = true),
      );
      await sleep(3000);
      expect(srv.arrivals).toHaveLength(1);
      expect(settled).toBe(false);
    } finally {
      await own.stop();
      await srv.close();
    }
  });
});

// tests/e2e/engineWorld.ts secretLeaks scans the stored state (a secret outside a secret value is
// plaintext there: with upstream's plain stdout/stderr, a script that printed one is caught) and,
// in case some provider marked the streams secret, every command's streams decrypted.
test("the e2e secret scan reads command streams decrypted, whether or not they are marked secret", () => {
  const sig = "1b47061264138c4ac30d75fd1eb44270";
  const exported = JSON.stringify({
    deployment: {
      resources: [
        { type: "command:remote:Command", outputs: { stdout: '{"ok":true}', stderr: "progress sk_plain_leak" } },
        { type: "command:remote:Command", outputs: { stdout: "", stderr: { "4dabf18193072939515e22adb298388d": sig, plaintext: JSON.stringify("ak_hidden_leak") } } },
        { type: "pulumi-nodejs:dynamic/health:HealthCheck", outputs: { stderr: "not a command: sk_other" } },
      ],
    },
  });
  const streams = commandStreams(exported);
  expect(streams).toContain("sk_plain_leak");
  expect(streams).toContain("ak_hidden_leak");
  expect(streams).not.toContain("sk_other");
});

describe.skipIf(!!noPlugins)("docker:index/container:Container diff (pulumi-docker v5.1.0 over kreuzwerker v4.5.0)", () => {
  let plugin: ProviderPlugin;
  beforeAll(async () => {
    plugin = await ProviderPlugin.start(dockerPlugin!);
    await plugin.configure({ host: "unix:///nonexistent.sock" });
  });
  afterAll(async () => plugin?.stop());

  const base: Props = {
    name: "pdb",
    image: "sha256:" + "a".repeat(64),
    command: ["--config", "/data/config.yaml"],
    envs: ["A=1", "B=2"],
    ports: [{ internal: 8080, external: 18080 }],
    volumes: [{ hostPath: "/srv/data", containerPath: "/data" }],
    restart: "unless-stopped",
    stopSignal: "SIGTERM",
    stopTimeout: 30,
    destroyGraceSeconds: 30,
    labels: [
      { label: "progressdb.version", value: "0.2.1" },
      { label: "progressdb.settings", value: secret("digest") },
    ],
  };
  const diff = (news: Props) => plugin.diff(urnOf(CONTAINER, "c"), "id", base, news);

  // resource_docker_container.go: env, labels and volumes are schema.TypeSet.
  test("envs, labels and volumes are sets: their order is no change", async () => {
    const reordered = { ...base, envs: ["B=2", "A=1"], labels: [...(base.labels as Props[])].reverse() };
    expect((await diff(reordered)).changes).toBe("none");
  });

  // resource_docker_container.go: ports' ip defaults to 0.0.0.0 and protocol to tcp (ForceNew);
  // the ports' DiffSuppressFunc matches them by internal port.
  test("ports with upstream's defaults spelled out are no change", async () => {
    expect((await diff({ ...base, ports: [{ internal: 8080, external: 18080, ip: "0.0.0.0", protocol: "tcp" }] })).changes).toBe("none");
  });

  // resource_docker_container.go: healthcheck, must_run, wait, wait_timeout, start and
  // destroy_grace_seconds have no ForceNew: an update in place.
  test.each([
    ["healthcheck", { tests: ["CMD", "true"], interval: "10s" }],
    ["mustRun", false],
    ["wait", true],
    ["waitTimeout", 90],
    ["start", false],
    ["destroyGraceSeconds", 5],
    ["restart", "always"],
  ])("a change of %s updates in place", async (key, value) => {
    const d = await diff({ ...base, [key]: value });
    expect(d).toMatchObject({ changes: "some", diffs: [key], replaces: [] });
  });

  // resource_docker_container.go (ForceNew) and pulumi-docker resources.go (DeleteBeforeReplace).
  test.each([
    ["image", "sha256:" + "b".repeat(64)],
    ["labels", [{ label: "progressdb.version", value: "0.2.2" }, { label: "progressdb.settings", value: secret("digest") }]],
    ["envs", ["A=1"]],
    ["ports", [{ internal: 8080, external: 18081 }]],
    ["stopTimeout", 10],
  ])("a change of %s replaces, deleting first", async (key, value) => {
    const d = await diff({ ...base, [key]: value });
    expect(d).toMatchObject({ changes: "some", replaces: [key], deleteBeforeReplace: true });
  });
});

describe.skipIf(!!(noPlugins ?? noPodman))("docker:index/container:Container against podman's Docker API", () => {
  let podman: Podman;
  let plugin: ProviderPlugin;
  let recorder: http.Server;
  const requests: Array<{ method: string; url: string; body: string }> = [];
  let hostPort: number;
  const name = `pdb-contract-${process.pid}`;
  const urn = urnOf(CONTAINER, "c");
  let inputs: Props;
  let id = "";
  let state: Props = {};

  beforeAll(async () => {
    podman = await startPodman();
    await podman.buildImage("0.1.2");
    // What the provider sends, recorded before the podman workaround proxy rewrites anything.
    const sock = path.join(tempDir("docker-rec"), "docker.sock");
    recorder = await startDockerFaithfulProxy(podman.dockerHost.replace(/^unix:\/\//, ""), sock, (r) => requests.push(r));
    plugin = await ProviderPlugin.start(dockerPlugin!);
    await plugin.configure({ host: `unix://${sock}` });
    hostPort = await freePort();
    inputs = {
      name,
      image: `${IMAGE}:v0.1.2`,
      // (no bind mount: the image's VOLUME /data becomes an anonymous volume; the db in the home dir)
      command: ["--db", "/home/progressdb/db", "--addr", ":8080"],
      ports: [{ internal: 8080, external: hostPort }],
      restart: "no",
      labels: [{ label: "progressdb.version", value: "0.1.2" }],
    };
  }, 300_000);
  afterAll(async () => {
    await plugin?.stop();
    await new Promise<void>((resolve) => (recorder ? recorder.close(() => resolve()) : resolve()));
    await podman?.stop();
  }, 120_000);

  async function inspect(): Promise<{ Id: string; State: { Running: boolean }; Mounts: Array<{ Type: string; Name?: string }> } | undefined> {
    const r = await podman.cli(["container", "inspect", name]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Array<{ Id: string; State: { Running: boolean }; Mounts: Array<{ Type: string; Name?: string }> }>)[0] : undefined;
  }

  // resource_docker_container.go (ports.ip Default "0.0.0.0") and _structures.go portSetToDockerPorts.
  test("create publishes ports with HostIp 0.0.0.0, and the port answers (through the podman proxy)", async () => {
    const created = await plugin.create(urn, inputs);
    id = created.id;
    state = created.properties;
    const create = requests.find((r) => r.method === "POST" && /\/containers\/create/.test(r.url))!;
    expect((JSON.parse(create.body) as { HostConfig: { PortBindings: unknown } }).HostConfig.PortBindings).toEqual({
      "8080/tcp": [{ HostIp: "0.0.0.0", HostPort: String(hostPort) }],
    });
    expect((await inspect())!.State.Running).toBe(true);
    await waitFor("the published port", async () => (await run("curl", ["-s", "-o", "/dev/null", "-m", "2", `http://127.0.0.1:${hostPort}/healthz`])).code === 0, 20_000, 250);
  }, 120_000);

  // resource_docker_container_funcs.go resourceDockerContainerRead (a stopped container with
  // must_run gets must_run=false in state) and resourceDockerContainerUpdate (false -> true starts it).
  test("a refresh of a stopped container keeps it in state with mustRun false; the next update starts the same container", async () => {
    expect(id).not.toBe("");
    expect((await podman.cli(["stop", "-t", "2", name])).code).toBe(0);
    const read = await plugin.read(urn, id, state, inputs);
    expect(read.id).toBe(id);
    expect(read.properties).toMatchObject({ mustRun: false, exitCode: expect.any(Number) });
    expect(read.inputs).toMatchObject({ mustRun: false });
    const d = await plugin.diff(urn, id, read.inputs, inputs, read.properties);
    expect(d).toMatchObject({ changes: "some", diffs: ["mustRun"], replaces: [] });
    state = await plugin.update(urn, id, read.properties, inputs, read.inputs);
    const after = (await inspect())!;
    expect(after.Id).toBe(id);
    expect(after.State.Running).toBe(true);
  }, 120_000);

  // resource_docker_container_funcs.go resourceDockerContainerDelete: ContainerStop with
  // destroy_grace_seconds or 0, ContainerRemove{Force, RemoveVolumes: remove_volumes (default true)}.
  test("delete without destroyGraceSeconds stops with t=0 and removes the anonymous volumes; with it, stops with that grace", async () => {
    const anon = (await inspect())!.Mounts.filter((m) => m.Type === "volume").map((m) => m.Name!);
    expect(anon.length).toBeGreaterThan(0);
    requests.length = 0;
    await plugin.delete(urn, id, state);
    const calls = requests.map((r) => `${r.method} ${r.url.replace(/^\/v[0-9.]+/, "")}`);
    expect(calls).toEqual(expect.arrayContaining([`POST /containers/${id}/stop?t=0`, `DELETE /containers/${id}?force=true&v=true`]));
    expect(await inspect()).toBeUndefined();
    const vols = (await podman.cli(["volume", "ls", "-q"])).stdout.split("\n").filter(Boolean);
    for (const v of anon) expect(vols).not.toContain(v);

    const graced = await plugin.create(urn, { ...inputs, destroyGraceSeconds: 7 });
    requests.length = 0;
    await plugin.delete(urn, graced.id, graced.properties);
    expect(requests.map((r) => `${r.method} ${r.url.replace(/^\/v[0-9.]+/, "")}`)).toContain(`POST /containers/${graced.id}/stop?t=7`);
    await sleep(0);
  }, 120_000);
});
