// Issue #17, the shared state backend: the upgrade cycle with the real engine on a DIY S3
// backend (`pulumi login 's3://<bucket>?endpoint=…&s3ForcePathStyle=true'`) in MinIO on
// loopback, as a team runs it (README "Running it as a team"). The state bucket has its own
// MinIO user, whose only rights are on that bucket; the backups go to another bucket with the
// stack's own keys. Deploy 0.1.2 while a second `pulumi up` on the same stack is refused by the
// lock; the upgrade to 0.2.1 with the pulumi CLI SIGKILLed during the install, then the
// documented recovery (the lock message, `pulumi cancel`, the pending operations,
// `pulumi refresh --clear-pending-creates`, `pulumi up`); the rollback onto the kept data, whose
// guard reads the stack's own outputs back from the bucket.
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { REPO, type CliResult } from "../../scripts/lib/pulumiCli";
import { addBucketUser, getObject, listKeys, minioUnavailable, signedRequest, type MinioUser } from "../fixtures/minio";
import { run, waitFor } from "../fixtures/net";
import { readBodies, readyz, writeThread, type WrittenThread } from "../fixtures/progressdbApi";
import { alive, allPids, cmdline, descendants, findPulumiCli, killAll } from "../faults/helpers";
import { PULUMI, startEngineWorld, type EngineWorld } from "./engineWorld";

function unavailable(): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing: run scripts/setup.sh`;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/aws"]) if (!existsSync(f)) return `${f} is missing (scripts/setup.sh installs it)`;
  return minioUnavailable();
}
const skip = unavailable();
if (skip) console.warn(`\n\n*** SKIPPING tests/e2e/s3Backend.e2e.test.ts: ${skip} ***\n`);

/** Named like the team's first stack, so changed-stacks.sh deploys it first. */
const STACK = "staging";
const PROJECT = "progressdb";
const STATE_BUCKET = "pdb-state";
/** Where the DIY backend keeps this stack's locks and its checkpoint. */
const LOCKS = `.pulumi/locks/organization/${PROJECT}/${STACK}/`;
const CHECKPOINT = `.pulumi/stacks/${PROJECT}/${STACK}.json`;
/** The CLI's refusal when another update holds the stack (pkg/backend/diy/lock.go, v3.259.0). */
const LOCKED = "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`.";

const text = (r: CliResult) => r.stdout + r.stderr;
/** What the CLI said at each step, for a human to read after a run (.state/ is git-ignored). */
const DEBUG_LOG = path.join(REPO, ".state", "s3-backend-e2e.log");
function note(what: string, body: string): void {
  mkdirSync(path.dirname(DEBUG_LOG), { recursive: true });
  appendFileSync(DEBUG_LOG, `\n===== ${new Date().toISOString()} ${what}\n${body}\n`);
}
const tail = (r: CliResult, n = 40) => text(r).trim().split("\n").slice(-n).join("\n");

describe.skipIf(!!skip)("a shared S3 state backend (real engine, MinIO): locking, recovery after a killed update, the cycle", { timeout: 240_000 }, () => {
  let w: EngineWorld;
  let state: MinioUser;
  let backendUrl = "";
  const threads: WrittenThread[] = [];
  const locks = () => listKeys(w.minio, STATE_BUCKET, LOCKS, state);

  beforeAll(async () => {
    w = await startEngineWorld({
      stackName: STACK,
      backend: async (minio) => {
        state = await addBucketUser(minio, STATE_BUCKET, "pdbstate");
        backendUrl = `s3://${STATE_BUCKET}?endpoint=${minio.endpoint}&s3ForcePathStyle=true&region=${minio.region}`;
        // The state bucket's own keys: only the pulumi CLI gets them (the host never sees them).
        return { url: backendUrl, env: { AWS_ACCESS_KEY_ID: state.accessKeyId, AWS_SECRET_ACCESS_KEY: state.secretAccessKey, AWS_REGION: minio.region } };
      },
    });
  }, 300_000);

  afterAll(async () => {
    await w?.stop();
  });

  test("`pulumi login s3://…` puts the stack in the state bucket; the state user cannot reach the backup bucket, nor the backups user's data", async () => {
    const who = await w.stack.run(["whoami", "--verbose"], { withStack: false });
    expect(text(who)).toContain(`Backend URL: ${backendUrl}`);
    expect(await listKeys(w.minio, STATE_BUCKET, ".pulumi/", state)).toEqual(expect.arrayContaining([CHECKPOINT, ".pulumi/meta.yaml"]));
    await expect(listKeys(w.minio, w.minio.bucket, "", state)).rejects.toThrow(/answered 403[\s\S]*AccessDenied/);
    // Nothing of the state landed in the backup bucket.
    expect((await listKeys(w.minio, w.minio.bucket, "")).filter((k) => k.startsWith(".pulumi"))).toEqual([]);
  });

  test("two `pulumi up` at once: the second is refused at once with the lock message naming the first's lock object and pid; the first deploys 0.1.2", async () => {
    expect(await locks()).toEqual([]);
    const first = w.stack.up([], { allowFailure: true });
    try {
      // Start the second only once the first holds the lock (its object is in the bucket).
      await waitFor("the first up's lock object in the state bucket", async () => (await locks()).length === 1, 60_000, 20);
      const [lockKey] = await locks();
      const holder = JSON.parse(await getObject(w.minio, STATE_BUCKET, lockKey, state)) as { pid: number; username: string; hostname: string; timestamp: string };
      expect(cmdline(holder.pid).slice(0, 2)).toEqual([expect.stringMatching(/pulumi$/), "up"]);
      const second = await w.stack.up([], { allowFailure: true });
      note(`second up while the first holds the lock (exit ${second.code}, ${second.ms} ms)`, text(second));
      expect(second.code).not.toBe(0);
      expect(second.ms).toBeLessThan(15_000);
      expect(text(second)).toContain(LOCKED);
      const where = `s3://${STATE_BUCKET}/${lockKey}?endpoint=`;
      expect(text(second)).toContain(where);
      expect(text(second)).toMatch(new RegExp(`: created by ${holder.username}@${holder.hostname} \\(pid ${holder.pid}\\) at `));
      // The refused update changed nothing: the first one's lock is still the only one.
      expect(await locks()).toEqual([lockKey]);
    } finally {
      const r = await first;
      expect(r.code, tail(r)).toBe(0);
    }
    expect(await locks()).toEqual([]);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
    expect(await w.stack.updates()).toEqual([["succeeded", "0.1.2"]]);
    threads.push(await writeThread(w.api("0.1.2"), 2));
  });

  test("`pulumi up` SIGKILLed during the install of 0.2.1: the next up is refused by the dead update's lock; pulumi cancel, the pending operations, refresh --clear-pending-creates and up converge", async () => {
    w.stack.setVersionLine("0.2.1");
    const killedUp = w.stack.up([], { allowFailure: true });
    let children: number[] = [];
    let cliPid: number | undefined;
    try {
      await waitFor("the install script on the host", async () => allPids().some((p) => cmdline(p).join(" ").includes("# progressdb-upgrades install.sh") && cmdline(p).join(" ").includes(w.installDir)), 150_000, 20);
      cliPid = findPulumiCli(w.stack.projectDir, "up");
      if (cliPid === undefined) throw new Error("no pulumi up process found");
      children = descendants(cliPid);
      process.kill(cliPid, "SIGKILL");
    } finally {
      await killedUp;
    }
    // The plugins the killed CLI started (language host, providers) outlive it: stop them, as the README says to.
    await waitFor("the killed CLI's plugins to exit", async () => children.every((p) => !alive(p)), 5_000, 100).catch(() => killAll(children));
    if (cliPid === undefined) throw new Error("unreachable");
    expect(alive(cliPid)).toBe(false);
    const [stale] = await locks();
    expect(stale).toMatch(new RegExp(`^${LOCKS}[0-9a-f-]+\\.json$`));

    // 1. What the next operator sees: the dead update's lock, with its pid.
    const refused = await w.stack.up([], { allowFailure: true });
    note(`up after the kill (exit ${refused.code}, ${refused.ms} ms)`, text(refused));
    expect(refused.code).not.toBe(0);
    expect(text(refused)).toContain(LOCKED);
    expect(text(refused)).toContain(`(pid ${cliPid})`);
    // 2. pulumi cancel works on a DIY backend: it deletes the stack's lock objects (it stops nothing).
    const cancel = await w.stack.run(["cancel", "--yes"]);
    note(`pulumi cancel (${cancel.ms} ms)`, text(cancel));
    expect(text(cancel)).toContain(`The currently running update for '${STACK}' has been canceled!`);
    expect(await locks()).toEqual([]);
    // 3. The step that was interrupted is in the state's pending operations.
    const exported = JSON.parse(await w.stack.exportState()) as { deployment: { pending_operations?: Array<{ type: string; resource: { urn: string } }> } };
    const pending = (exported.deployment.pending_operations ?? []).map((o) => `${o.type} ${o.resource.urn.split("::").pop()}`);
    note("pending operations after the kill", JSON.stringify(pending));
    expect(pending).toContain("creating progressdb-deploy-install");
    // 4. A refresh that clears the pending creates, then the up again: every host script is idempotent.
    const refresh = await w.stack.run(["refresh", "--yes", "--skip-preview", "--clear-pending-creates"], { allowFailure: true });
    expect(refresh.code, tail(refresh)).toBe(0);
    const after = JSON.parse(await w.stack.exportState()) as { deployment: { pending_operations?: unknown[] } };
    expect(after.deployment.pending_operations ?? []).toEqual([]);
    const up = await w.stack.up([], { allowFailure: true });
    expect(up.code, tail(up)).toBe(0);
    // 5. The service answers the new version, with the data the old one served.
    expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", previousVersion: "0.1.2", healthStatus: "healthy", dataContinuity: "passed" });
    for (const t of threads) expect(await readBodies(w.api("0.2.1"), t)).toEqual(t.bodies);
    expect(await locks()).toEqual([]);
  });

  describe("the CI workflow's own steps on this backend (scripts/ci, as .github/workflows/pulumi.yml runs them)", () => {
    let ciEnv: NodeJS.ProcessEnv;
    let repo: string;
    let summaryFile: string;
    const git = async (...args: string[]) => {
      const r = await run("git", ["-C", repo, ...args]);
      if (r.code !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
      return r.stdout.trim();
    };
    /** Runs scripts/ci/<name> in the scratch project, with the workflow's environment. */
    const ci = (name: string, args: string[], extra: Record<string, string> = {}) =>
      run("bash", [path.join(REPO, "scripts", "ci", name), ...args], { env: { ...ciEnv, ...extra }, cwd: repo, timeoutMs: 200_000 });

    beforeAll(async () => {
      repo = w.stack.projectDir;
      summaryFile = path.join(w.root, "step-summary.md");
      // What a fresh runner has: the backend URL, the state bucket's keys and the passphrase from the
      // secret store, and no `pulumi login` (an empty credentials dir).
      const fresh = mkdtempSync(path.join(w.root, "ci-creds-"));
      ciEnv = { ...w.stack.environment, PULUMI_BACKEND_URL: backendUrl, PULUMI_CREDENTIALS_PATH: fresh, PDB_CI_WORKDIR: repo, GITHUB_STEP_SUMMARY: summaryFile };
      // The stack file under git, as in the repository: main holds 0.2.1.
      await git("init", "-q", "-b", "main");
      await git("config", "user.email", "ci@example.invalid");
      await git("config", "user.name", "ci");
      await git("add", `Pulumi.${STACK}.yaml`);
      await git("commit", "-q", "-m", "staging at 0.2.1");
    });

    test("a pull request downgrading within 0.2: changed-stacks.sh picks the stack; preview.sh fails with the downgrade guard's refusal in the PR comment; nothing changed", async () => {
      await git("checkout", "-q", "-b", "downgrade");
      w.stack.setVersionLine("0.2.0");
      await git("commit", "-q", "-am", "staging: 0.2.0");
      const picked = await ci("changed-stacks.sh", ["--format", "json", "main", "HEAD"]);
      expect(picked.code, picked.stderr).toBe(0);
      expect(JSON.parse(picked.stdout)).toEqual({ stacks: [STACK], staging: [STACK], others: [], production: [], any: true });
      const comment = path.join(w.root, "downgrade.md");
      const preview = await ci("preview.sh", [STACK, "--comment", comment]);
      expect(preview.code).not.toBe(0);
      const body = readFileSync(comment, "utf8");
      expect(body.split("\n")[0]).toBe(`#### :tropical_drink: \`preview\` on ${PROJECT}/${STACK}`);
      expect(body).toContain(`\`pulumi preview\` for stack **${STACK}** **failed** (exit ${preview.code}): nothing was changed.`);
      const said = body.slice(body.indexOf("What the program said:"), body.indexOf("<details>"));
      expect(said).toContain("progressdb:version 0.2.0 is lower than the deployed 0.2.1. Both read the same data format");
      expect(said).toContain("pulumi config set progressdb:allowDowngrade true");
      expect(body).toContain("<summary>Pulumi report</summary>");
      expect(await readyz(w.url)).toEqual({ status: 200, version: "v0.2.1" });
      await git("checkout", "-q", "main");
    });

    test("a pull request rolling back to 0.1.2: preview.sh succeeds with the crossing warning; after the merge up.sh (SSH key from the CI secret store) rolls back onto the kept data", async () => {
      await git("checkout", "-q", "-b", "rollback");
      w.stack.setVersionLine("0.1.2");
      await git("commit", "-q", "-am", "staging: roll back to 0.1.2");
      const picked = await ci("changed-stacks.sh", ["main", "HEAD"]);
      expect(picked.stdout).toBe(`${STACK}\n`);
      const comment = path.join(w.root, "rollback.md");
      const preview = await ci("preview.sh", [STACK, "--comment", comment]);
      expect(preview.code, preview.stdout.slice(-3000)).toBe(0);
      const body = readFileSync(comment, "utf8");
      expect(body).toContain(`\`pulumi preview\` for stack **${STACK}** succeeded.`);
      expect(body.slice(body.indexOf("What the program said:"), body.indexOf("<details>"))).toContain("is a rollback across the data format: 0.1.2 will run on its own data, kept at");

      // Merge; the push to main picks the same stack from before..after.
      const before = await git("rev-parse", "main");
      await git("checkout", "-q", "main");
      await git("merge", "-q", "--ff-only", "rollback");
      expect((await ci("changed-stacks.sh", [before, "HEAD"])).stdout).toBe(`${STACK}\n`);
      // The stack file's own SSH key no longer gets in: only the key from the secret store does.
      const stranger = path.join(w.root, "not_authorized_ed25519");
      expect((await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "not-authorized", "-f", stranger])).code).toBe(0);
      await w.stack.set("progressdb:sshPrivateKey", readFileSync(stranger, "utf8"), { secret: true });
      const up = await ci("up.sh", [STACK], { PDB_SSH_PRIVATE_KEY: w.sshd.privateKey });
      expect(up.code, (up.stdout + up.stderr).slice(-3000)).toBe(0);
      expect(up.stderr).toContain(`progressdb:sshPrivateKey of stack ${STACK} set from the CI secret store`);
      expect(readFileSync(summaryFile, "utf8")).toContain("| version | `0.1.2` |");
      expect(readFileSync(summaryFile, "utf8")).toContain("| healthStatus | `healthy` |");
      expect(await w.stack.outputs()).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
      for (const t of threads) expect(await readBodies(w.api("0.1.2"), t)).toEqual(t.bodies);
      // The killed update left no entry in the history (a DIY backend writes it when an update ends).
      const updates = await w.stack.updates();
      expect(updates).toEqual([["succeeded", "0.1.2"], ["succeeded", "0.2.1"], ["succeeded", "0.1.2"]]);
      const printed = [preview.stdout, preview.stderr, up.stdout, up.stderr, readFileSync(comment, "utf8")].join("\n");
      expect(w.secretValues().filter((x) => printed.includes(x))).toEqual([]);
      expect(printed).not.toContain(state.secretAccessKey);
    });

    test("up.sh on a stack locked by another update: refused fast, says what to do, removes no lock", async () => {
      const lock = `${LOCKS}00000000-0000-4000-8000-000000000017.json`;
      const put = await signedRequest(w.minio, state, "PUT", `/${STATE_BUCKET}/${lock}`, {}, Buffer.from(JSON.stringify({ pid: 4242, username: "alice", hostname: "laptop", timestamp: new Date().toISOString() })));
      expect(put.status, put.text).toBe(200);
      const started = Date.now();
      const up = await ci("up.sh", [STACK]);
      note(`up.sh on a locked stack (exit ${up.code}, ${Date.now() - started} ms)`, up.stdout + up.stderr);
      expect(up.code).not.toBe(0);
      expect(up.stdout + up.stderr).toContain(LOCKED);
      expect(up.stdout + up.stderr).toContain(": created by alice@laptop (pid 4242) at ");
      expect(up.stderr).toContain(`::error title=stack ${STACK} is locked::`);
      expect(await locks()).toEqual([lock]);
      await w.stack.run(["cancel", "--yes"]);
      expect(await locks()).toEqual([]);
    });
  });

  test("the checkpoint in the bucket holds no secret in plaintext", async () => {
    const checkpoint = await getObject(w.minio, STATE_BUCKET, CHECKPOINT, state);
    expect(checkpoint).toContain('"secrets_providers"');
    expect(w.secretValues().filter((s) => checkpoint.includes(s))).toEqual([]);
  });
});
