// Issue #17, creating a stack as a team does: `npm run new-stack -- <name>` (scripts/newStack.ts)
// driven with answers on stdin against the real CLI on a file backend (no program run), and the
// `template:` section of Pulumi.yaml as `pulumi new` reads it.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PulumiStack, REPO } from "../../scripts/lib/pulumiCli";
import { SECRET_KEYS, parseSettings, secretWellFormed, type SecretKey, type SecretState } from "../../components/config";
import { run, type RunResult } from "../fixtures/net";
import { PULUMI } from "../e2e/engineWorld";

const skip = existsSync(PULUMI) ? undefined : `${PULUMI} is missing: run scripts/setup.sh`;
if (skip) console.warn(`\n\n*** SKIPPING tests/ci/newStack.test.ts: ${skip} ***\n`);

describe.skipIf(!!skip)("npm run new-stack: prompts for the required keys, secrets from files, encrypted", { timeout: 120_000 }, () => {
  let root: string;
  let project: PulumiStack;
  const secrets = {
    // A real key, made now: nothing key-shaped is committed.
    sshPrivateKey: generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    kmsMasterKeyHex: `${randomBytes(32).toString("hex")}\n`,
    apiKey: `sk_${randomBytes(12).toString("hex")}\n`,
    adminApiKey: `ak_${randomBytes(12).toString("hex")}\n`,
    signingKey: `sg_${randomBytes(12).toString("hex")}\n`,
  };
  const hostKey = "[10.20.0.7]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0OkZfwzXhfGsqm0rH/0M9JzU7bStF96knfic8iTx0";

  const newStack = (args: string[], input: string): Promise<RunResult> =>
    run(path.join(REPO, "node_modules", ".bin", "tsx"), [path.join(REPO, "scripts", "newStack.ts"), ...args, "--cwd", project.projectDir], { env: project.environment, input, timeoutMs: 100_000 });

  beforeAll(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "pdb-new-stack-"));
    // A scratch copy of the project on a file backend (the stack it would make is never used).
    project = new PulumiStack({ workDir: root, stack: "unused", passphrase: randomBytes(12).toString("hex") });
    for (const [k, v] of Object.entries(secrets)) writeFileSync(path.join(root, `${k}.txt`), v, { mode: 0o600 });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const answers = (over: Partial<Record<string, string>> = {}) =>
    [
      over.version ?? "", // version [0.2.1]
      "", // mode [binary]
      over.address ?? "10.20.0.7",
      "2222",
      "deploy",
      hostKey,
      "", // serviceManager [systemd]
      "", // installDir
      "", // dbPath
      "", // kms.mode [embedded]
      "acme-progressdb-backups-eu",
      "eu-west-1",
      "", // endpoint (AWS)
      over.url ?? "https://10.20.0.7:8443",
      path.join(root, "sshPrivateKey.txt"),
      path.join(root, "kmsMasterKeyHex.txt"),
      path.join(root, "apiKey.txt"),
      path.join(root, "adminApiKey.txt"),
      path.join(root, "signingKey.txt"),
      "", // frontendApiKey
      "", // s3AccessKeyId: the host's own
    ].join("\n") + "\n";

  test("answers on stdin: the stack is created with every required key at its path, the secrets encrypted from the files, none of them printed or in the file", async () => {
    const r = await newStack(["eu"], answers());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const file = readFileSync(path.join(project.projectDir, "Pulumi.eu.yaml"), "utf8");
    const printed = r.stdout + r.stderr;
    for (const v of Object.values(secrets)) {
      expect(file).not.toContain(v.trim().split("\n")[1] ?? v.trim());
      expect(printed).not.toContain(v.trim().split("\n")[1] ?? v.trim());
    }
    expect(printed).toContain("progressdb:apiKey: [secret]");
    // Read back through the CLI: the values, and the secrets decrypted equal to the files.
    const cfg = JSON.parse((await project.run(["config", "--json", "--show-secrets", "--stack", "eu"], { withStack: false })).stdout) as Record<string, { value?: string; objectValue?: unknown; secret: boolean }>;
    expect(cfg["progressdb:version"]).toMatchObject({ value: "0.2.1", secret: false });
    expect(cfg["progressdb:deployment"].objectValue).toEqual({ mode: "binary", host: { address: "10.20.0.7", port: 2222, user: "deploy", hostKey }, binary: { serviceManager: "systemd", installDir: "/opt/progressdb" } });
    expect(cfg["progressdb:backup"].objectValue).toEqual({ bucket: "acme-progressdb-backups-eu", region: "eu-west-1" });
    expect(cfg["progressdb:health"].objectValue).toEqual({ url: "https://10.20.0.7:8443" });
    for (const [k, v] of Object.entries(secrets)) {
      // As `pulumi config set --secret k < file` stores it: without the final newline.
      expect(cfg[`progressdb:${k}`], k).toMatchObject({ secret: true, value: v.replace(/\n$/, "") });
      expect(file).toMatch(new RegExp(`progressdb:${k}:\\n\\s+secure: v1:`));
    }
    // The program's validator accepts what was written.
    const values = Object.fromEntries(["version", "deployment", "storage", "kms", "backup", "health"].map((k) => [k, cfg[`progressdb:${k}`]?.objectValue ?? cfg[`progressdb:${k}`]?.value]));
    // As the program reads them: Pulumi.yaml's empty default means absent.
    const present = (k: SecretKey) => (cfg[`progressdb:${k}`]?.value ?? "") !== "";
    const states = Object.fromEntries(SECRET_KEYS.map((k) => [k, present(k) ? "secret" : "absent"])) as Record<SecretKey, SecretState>;
    const malformed = SECRET_KEYS.filter((k) => present(k) && !secretWellFormed(k, cfg[`progressdb:${k}`].value ?? ""));
    expect(SECRET_KEYS.filter(present).sort()).toEqual(Object.keys(secrets).sort());
    expect(() => parseSettings({ values, secrets: states, malformed })).not.toThrow();
  });

  test("a bad answer is refused by the program's validator, naming the key, and nothing is created", async () => {
    const r = await newStack(["bad"], answers({ url: "ftp://10.20.0.7" }));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("new-stack: nothing was created:");
    expect(r.stderr).toContain("progressdb:health.url");
    expect(existsSync(path.join(project.projectDir, "Pulumi.bad.yaml"))).toBe(false);
    const ls = await project.run(["stack", "ls", "--json"], { withStack: false });
    expect((JSON.parse(ls.stdout) as Array<{ name: string }>).map((s) => s.name)).not.toContain("bad");
  });

  test("a required secret without a file is refused before anything is created", async () => {
    const r = await newStack(["nokey"], answers().replace(path.join(root, "sshPrivateKey.txt"), ""));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("progressdb:sshPrivateKey is required: give the file that holds it");
    expect(existsSync(path.join(project.projectDir, "Pulumi.nokey.yaml"))).toBe(false);
  });
});

describe.skipIf(!!skip)("Pulumi.yaml's template: section, as `pulumi new` reads it", { timeout: 120_000 }, () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "pdb-pulumi-new-"));
    // The template: this project's Pulumi.yaml, with a program that needs no npm install.
    mkdirSync(path.join(root, "template"));
    copyFileSync(path.join(REPO, "Pulumi.yaml"), path.join(root, "template", "Pulumi.yaml"));
    writeFileSync(path.join(root, "template", "package.json"), JSON.stringify({ name: "pdb-template-check", version: "0.0.0", private: true }));
    writeFileSync(path.join(root, "template", "index.ts"), "export {};\n");
    mkdirSync(path.join(root, "backend"));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const pulumiNew = (dir: string, extra: string[]) => {
    mkdirSync(path.join(root, dir));
    const project = new PulumiStack({ workDir: path.join(root, `unused-${dir}`), stack: "unused", passphrase: "template-check" });
    return run(PULUMI, ["new", path.join(root, "template"), "--yes", "--non-interactive", "--secrets-provider", "passphrase", "--name", "progressdb", ...extra], {
      cwd: path.join(root, dir),
      env: { ...project.environment, PULUMI_BACKEND_URL: `file://${path.join(root, "backend", dir)}` },
      timeoutMs: 100_000,
    });
  };

  test("--yes: a stack with the template's default version; the secret prompts are left for the operator (nothing in plaintext)", async () => {
    mkdirSync(path.join(root, "backend", "a"));
    const r = await pulumiNew("a", ["--stack", "eu"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const file = readFileSync(path.join(root, "a", "Pulumi.eu.yaml"), "utf8");
    expect(file).toMatch(/progressdb:version: 0\.2\.1/);
    expect(file).not.toMatch(/apiKey|adminApiKey|signingKey|kmsMasterKeyHex/);
    // pulumi new drops the template section from the project it writes.
    expect(readFileSync(path.join(root, "a", "Pulumi.yaml"), "utf8")).not.toMatch(/^template:/m);
  });

  test("a value given with --config is stored as given: a secret passed that way is in PLAINTEXT (the README says to answer the prompt or use new-stack)", async () => {
    mkdirSync(path.join(root, "backend", "b"));
    const r = await pulumiNew("b", ["--stack", "eu", "--config", "progressdb:apiKey=sk_plain_on_the_command_line"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(readFileSync(path.join(root, "b", "Pulumi.eu.yaml"), "utf8")).toContain("progressdb:apiKey: sk_plain_on_the_command_line");
  });
});
