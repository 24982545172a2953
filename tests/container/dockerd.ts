/**
 * Test fixture: Debian's dockerd (package docker.io) on its own data root,
 * exec root and API socket under a temp dir, its own containerd namespace, and a
 * bridge this fixture creates and deletes (no iptables rules, no masquerading,
 * no ip_forward change: published ports reach the container through
 * docker-proxy, from this machine only). cgroupfs, overlay2. The docker CLI on
 * this machine talks to it with DOCKER_HOST; the legacy builder builds the
 * images of ./engine.ts (no buildx here).
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { run, stopChild, tempDir, waitFor, which } from "../fixtures/net";
import { IMAGE, imageTags, writeImageContext, type ContainerEngine } from "./engine";

/** Why dockerd cannot be used here, or undefined. Cheap checks only. */
export function dockerdUnavailable(): string | undefined {
  if (!which("dockerd")) return "dockerd is not installed (apt-get install docker.io)";
  if (!which("docker")) return "no docker CLI on this host (apt-get install docker.io)";
  if (!which("ip")) return "ip (iproute2) is not installed";
  if (process.getuid?.() !== 0) return "the dockerd fixture runs a rootful dockerd and needs root";
  return undefined;
}

/** A /24 on a bridge of our own, in 10.213.0.0/16, that no interface here uses yet. */
async function freeSubnet(): Promise<string> {
  const used = (await run("ip", ["-4", "-o", "addr"])).stdout;
  for (let i = 0; i < 250; i++) {
    const third = (process.pid + i) % 250;
    if (!used.includes(`10.213.${third}.`)) return `10.213.${third}`;
  }
  throw new Error("no free 10.213.x.0/24 for the dockerd fixture's bridge");
}

export async function startDockerd(): Promise<ContainerEngine> {
  const dir = tempDir("dockerd");
  const socket = path.join(dir, "docker.sock");
  const bridge = `pdbdk${process.pid % 100000}`;
  const subnet = await freeSubnet();
  for (const args of [
    ["link", "add", bridge, "type", "bridge"],
    ["addr", "add", `${subnet}.1/24`, "dev", bridge],
    ["link", "set", bridge, "up"],
  ]) {
    const r = await run("ip", args);
    if (r.code !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr}`);
  }
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_BUILDKIT: "0" };
  const cli = (args: string[], opts: { timeoutMs?: number } = {}) => run("docker", args, { env, timeoutMs: opts.timeoutMs ?? 120_000 });
  const logFile = path.join(dir, "dockerd.log");
  const log = fs.openSync(logFile, "a");
  const ns = `pdb${process.pid}`;
  let daemon: ChildProcess | undefined = spawn(
    "dockerd",
    [
      `--data-root=${path.join(dir, "root")}`,
      `--exec-root=${path.join(dir, "exec")}`,
      `--pidfile=${path.join(dir, "dockerd.pid")}`,
      `--host=unix://${socket}`,
      `--containerd-namespace=${ns}`,
      `--containerd-plugins-namespace=${ns}-plugins`,
      `--bridge=${bridge}`,
      "--iptables=false",
      "--ip6tables=false",
      "--ip-masq=false",
      "--ip-forward=false",
      "--storage-driver=overlay2",
      "--exec-opt=native.cgroupdriver=cgroupfs",
      "--log-level=warn",
    ],
    { stdio: ["ignore", log, log] },
  );
  fs.closeSync(log);
  const stop = async () => {
    await cli(["rm", "--force", "--volumes", ...(await cli(["ps", "-aq"])).stdout.split("\n").filter(Boolean)]).catch(() => undefined);
    await stopChild(daemon, 20_000);
    daemon = undefined;
    const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(`${dir}/`));
    for (const m of mounts.reverse()) await run("umount", ["-l", m]).catch(() => undefined);
    await run("ip", ["link", "del", bridge]).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor("the dockerd API socket", async () => {
      if (daemon?.exitCode !== null) throw new Error(`dockerd exited ${daemon?.exitCode}`);
      return (await cli(["version", "--format", "{{.Server.Version}}"], { timeoutMs: 10_000 })).code === 0;
    }, 60_000, 200);
  } catch (e) {
    const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-3000) : "";
    await stop();
    throw new Error(`${(e as Error).message}\n${text}`, { cause: e });
  }
  return {
    kind: "dockerd",
    dockerHost: `unix://${socket}`,
    cli,
    spawn: (args) => spawn("docker", args, { env, stdio: ["ignore", "pipe", "pipe"] }),
    async buildImage(spec) {
      const ctx = path.join(dir, "images", typeof spec === "string" ? spec : spec.version);
      const version = await writeImageContext(spec, ctx);
      const tags = imageTags(version);
      const r = await cli(["build", "--quiet", ...tags.flatMap((t) => ["-t", `${IMAGE}:${t}`]), ctx]);
      if (r.code !== 0) throw new Error(`docker build ${IMAGE}:${tags[0]} failed:\n${r.stderr}`);
      return r.stdout.trim();
    },
    async localTags() {
      // Docker names docker.io's repositories without the registry (and filters by that name).
      const r = await cli(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE.replace(/^docker\.io\//, "")]);
      return r.stdout.split("\n").map((l) => l.trim()).filter(Boolean).map((t) => `docker.io/${t}`).sort();
    },
    async diedExitCodes(id, since) {
      const r = await cli(["events", "--since", since, "--until", new Date().toISOString(), "--filter", `container=${id}`, "--filter", "event=die", "--format", '{{index .Actor.Attributes "exitCode"}}']);
      return r.stdout.trim().split("\n").filter(Boolean);
    },
    stop,
  };
}
