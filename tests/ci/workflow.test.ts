// Issue #17, the CI workflow (.github/workflows/pulumi.yml) and the scripts it calls
// (scripts/ci/*.sh), without GitHub: actionlint (pinned, built into .tools/ by scripts/tools.sh)
// with shellcheck on every `run:` block, shellcheck on the scripts, what the workflow wires
// (triggers, the preview posted to the PR, staging → others → production, one concurrency group
// per stack, secrets only from the secret store), changed-stacks.sh on a real git history, and
// pr-comment.sh against a stand-in `gh`. The preview and up steps run with the real engine on the
// S3 backend in tests/e2e/s3Backend.e2e.test.ts.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { REPO } from "../../scripts/lib/pulumiCli";
import { run, type RunResult } from "../fixtures/net";

const ACTIONLINT = path.join(REPO, ".tools", "bin", "actionlint");
const SHELLCHECK = "/usr/bin/shellcheck";
const WORKFLOW = path.join(REPO, ".github", "workflows", "pulumi.yml");
const CI = path.join(REPO, "scripts", "ci");

/** js-yaml, the YAML parser @pulumi/pulumi itself depends on (no dependency of our own). */
const yaml = createRequire(createRequire(__filename).resolve("@pulumi/pulumi"))("js-yaml") as { load(text: string): unknown };

function unavailable(): string | undefined {
  if (!existsSync(ACTIONLINT)) return `${ACTIONLINT} is missing: run scripts/setup.sh (scripts/tools.sh builds it)`;
  if (!existsSync(SHELLCHECK)) return `${SHELLCHECK} is missing (scripts/setup.sh installs it)`;
  return undefined;
}
const skip = unavailable();
if (skip) console.warn(`\n\n*** SKIPPING tests/ci/workflow.test.ts: ${skip} ***\n`);

interface Finding {
  message: string;
  filepath: string;
  line: number;
  kind: string;
}

/** actionlint on `files`, with shellcheck on PATH (it checks every `run:` block with it). */
async function actionlint(files: string[], cwd = REPO): Promise<{ r: RunResult; findings: Finding[] }> {
  const r = await run(ACTIONLINT, ["-format", "{{json .}}", "-shellcheck", SHELLCHECK, ...files], { cwd, env: { PATH: "/usr/bin:/bin" } });
  const out = r.stdout.trim();
  return { r, findings: out ? (JSON.parse(out) as Finding[]) : [] };
}

interface Step {
  uses?: string;
  run?: string;
  id?: string;
  if?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  needs?: string | string[];
  if?: string;
  environment?: string;
  permissions?: Record<string, string>;
  strategy?: { matrix?: Record<string, unknown>; "max-parallel"?: number };
  concurrency?: { group: string; "cancel-in-progress": boolean };
  env?: Record<string, string>;
  steps: Step[];
}
interface Workflow {
  on: { pull_request: { paths: string[] }; push: { branches: string[]; paths: string[] }; workflow_dispatch: { inputs: Record<string, { required: boolean }> } };
  env: Record<string, string>;
  permissions: Record<string, string>;
  jobs: Record<string, Job>;
}

describe.skipIf(!!skip)("the CI workflow: actionlint, shellcheck, and what it wires", () => {
  const wf = () => yaml.load(readFileSync(WORKFLOW, "utf8")) as Workflow;

  test("actionlint (with shellcheck on every run: block) finds nothing in .github/workflows", async () => {
    const files = readdirSync(path.join(REPO, ".github", "workflows")).filter((f) => /\.ya?ml$/.test(f));
    expect(files).toContain("pulumi.yml");
    const { r, findings } = await actionlint(files.map((f) => path.join(".github", "workflows", f)));
    expect(findings.map((f) => `${f.filepath}:${f.line} [${f.kind}] ${f.message}`)).toEqual([]);
    expect(r.code, r.stderr).toBe(0);
  });

  test("the check is live: an unquoted variable in a run: block (shellcheck) and an unknown context (actionlint) are findings", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pdb-actionlint-"));
    try {
      mkdirSync(path.join(dir, ".github", "workflows"), { recursive: true });
      const broken = readFileSync(WORKFLOW, "utf8")
        .replace('run: scripts/ci/ssh-key.sh "$STACK"', "run: scripts/ci/ssh-key.sh $STACK")
        .replace("group: pulumi-up-${{ matrix.stack }}", "group: pulumi-up-${{ matrix.stak }}");
      writeFileSync(path.join(dir, ".github", "workflows", "pulumi.yml"), broken);
      const { r, findings } = await actionlint([path.join(".github", "workflows", "pulumi.yml")], dir);
      expect(r.code).not.toBe(0);
      expect(findings.map((f) => f.kind)).toEqual(expect.arrayContaining(["shellcheck", "expression"]));
      expect(findings.find((f) => f.kind === "shellcheck")?.message).toMatch(/SC2086/);
      expect(findings.find((f) => f.kind === "expression")?.message).toMatch(/stak/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("shellcheck finds nothing in scripts/ci", async () => {
    const scripts = readdirSync(CI).filter((f) => f.endsWith(".sh"));
    expect(scripts).toEqual(expect.arrayContaining(["changed-stacks.sh", "preview.sh", "up.sh", "ssh-key.sh", "pr-comment.sh", "lib.sh"]));
    const r = await run(SHELLCHECK, ["-x", ...scripts], { cwd: CI });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  test("pull requests touching a stack file (or the program) are previewed per stack by pulumi/actions, posted to the PR; a refused preview is posted by preview.sh", () => {
    const w = wf();
    expect(w.on.pull_request.paths).toEqual(expect.arrayContaining(["Pulumi.*.yaml", "index.ts", "components/**"]));
    expect(w.permissions).toEqual({ contents: "read" });
    const preview = w.jobs.preview;
    expect(preview.needs).toBe("stacks");
    expect(preview.if).toContain("github.event_name == 'pull_request'");
    expect(preview.if).toContain("github.event.pull_request.head.repo.full_name == github.repository");
    expect(preview.permissions).toEqual({ contents: "read", "pull-requests": "write" });
    expect(preview.strategy?.matrix?.stack).toBe("${{ fromJSON(needs.stacks.outputs.stacks) }}");
    const action = preview.steps.find((s) => s.id === "preview");
    expect(action?.uses).toMatch(/^pulumi\/actions@v\d+$/);
    expect(action?.with).toMatchObject({ command: "preview", "stack-name": "${{ matrix.stack }}", "comment-on-pr": true, diff: true, "cloud-url": "${{ vars.PULUMI_BACKEND_URL }}" });
    const refused = preview.steps[preview.steps.indexOf(action!) + 1];
    expect(refused.if).toBe("failure() && steps.preview.outcome == 'failure'");
    expect(refused.run).toContain('scripts/ci/preview.sh "$STACK" --comment');
    expect(refused.run).toContain("scripts/ci/pr-comment.sh");
    // The CLI the actions install is the one the tests ran.
    const pinned = /^PULUMI_VERSION=v(.*)$/m.exec(readFileSync(path.join(REPO, "tools", "versions.env"), "utf8"))?.[1];
    expect(w.env.PULUMI_VERSION).toBe(pinned);
    for (const s of preview.steps.filter((x) => x.uses?.startsWith("pulumi/actions@"))) expect(s.with?.["pulumi-version"]).toBe("${{ env.PULUMI_VERSION }}");
  });

  test("merges to main update the changed stacks: staging, then the others, production last; one concurrency group per stack, never cancelled; each in its environment", () => {
    const w = wf();
    expect(w.on.push).toEqual({ branches: ["main"], paths: ["Pulumi.*.yaml"] });
    // A manual run names its stacks; they go through the same jobs.
    expect(w.on.workflow_dispatch.inputs.stacks.required).toBe(true);
    const pick = w.jobs.stacks.steps.find((s) => s.id === "pick")!;
    expect(pick.run).toContain('args=(--stacks "$NAMED")');
    expect(pick.run).toContain('[ "$GITHUB_REF" = refs/heads/main ]');
    const order = ["up-staging", "up-others", "up-production"] as const;
    const outputs = { "up-staging": "staging", "up-others": "others", "up-production": "production" };
    for (const [i, name] of order.entries()) {
      const job = w.jobs[name];
      expect(job.strategy?.matrix?.stack).toBe(`\${{ fromJSON(needs.stacks.outputs.${outputs[name]}) }}`);
      expect(job.strategy?.["max-parallel"]).toBe(1);
      expect(job.concurrency).toEqual({ group: "pulumi-up-${{ matrix.stack }}", "cancel-in-progress": false });
      expect(job.environment).toBe("${{ matrix.stack }}");
      expect(job.if).toContain("github.event_name != 'pull_request'");
      expect([job.needs].flat()).toEqual(["stacks", ...order.slice(0, i)]);
      if (i > 0) expect(job.if).toMatch(/^\$\{\{ !cancelled\(\) && !failure\(\) && /);
      expect(job.steps.at(-1)?.run).toBe('scripts/ci/up.sh "$STACK"');
    }
  });

  test("secrets come only from the secret store, into env, and are never echoed", () => {
    const text = readFileSync(WORKFLOW, "utf8");
    const w = wf();
    const secretRefs = [...text.matchAll(/\$\{\{\s*secrets\.([A-Z_]+)\s*\}\}/g)].map((m) => m[1]);
    expect([...new Set(secretRefs)].sort()).toEqual(["PDB_SSH_PRIVATE_KEY", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_STATE_AWS_ACCESS_KEY_ID", "PULUMI_STATE_AWS_SECRET_ACCESS_KEY"]);
    for (const job of Object.values(w.jobs)) {
      for (const step of job.steps) {
        expect(step.run ?? "").not.toMatch(/secrets\.|set -x|printenv|\benv\b\s*$/m);
        expect(JSON.stringify(step.with ?? {})).not.toContain("secrets.");
      }
      for (const [k, v] of Object.entries(job.env ?? {})) if (String(v).includes("secrets.")) expect(k).toMatch(/^(PULUMI_CONFIG_PASSPHRASE|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|PDB_SSH_PRIVATE_KEY)$/);
    }
    expect(w.env.PULUMI_BACKEND_URL).toBe("${{ vars.PULUMI_BACKEND_URL }}");
    // And the scripts never trace.
    for (const f of readdirSync(CI)) expect(readFileSync(path.join(CI, f), "utf8")).not.toMatch(/^\s*set -[a-z]*x|^\s*set -o xtrace/m);
  });
});

describe("scripts/ci/changed-stacks.sh on a git history", () => {
  let repo: string;
  const git = async (...args: string[]) => {
    const r = await run("git", ["-C", repo, ...args]);
    if (r.code !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const write = (file: string, text: string) => writeFileSync(path.join(repo, file), text);
  const commit = async (message: string) => {
    await git("add", "-A");
    await git("commit", "-q", "-m", message);
    return git("rev-parse", "HEAD");
  };
  const picks = async (args: string[], env: Record<string, string> = {}) => {
    const r = await run("bash", [path.join(CI, "changed-stacks.sh"), ...args], { cwd: repo, env: { ...process.env, ...env } });
    if (r.code !== 0) throw new Error(`changed-stacks.sh ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  let base = "";

  beforeAll(async () => {
    repo = mkdtempSync(path.join(os.tmpdir(), "pdb-changed-stacks-"));
    await git("init", "-q", "-b", "main");
    await git("config", "user.email", "ci@example.invalid");
    await git("config", "user.name", "ci");
    for (const s of ["local", "staging", "production", "eu-west", "apac"]) write(`Pulumi.${s}.yaml`, `config:\n  progressdb:version: "0.1.2"\n`);
    write("Pulumi.yaml", "name: progressdb\n");
    write("index.ts", "export {};\n");
    write("README.md", "readme\n");
    base = await commit("initial");
  });

  afterAll(() => rmSync(repo, { recursive: true, force: true }));

  test("the stacks whose file changed, staging first, production last, the demo's local stack never; other files pick nothing", async () => {
    await git("checkout", "-q", "-b", "pr1", base);
    for (const s of ["production", "local", "eu-west", "staging", "apac"]) write(`Pulumi.${s}.yaml`, `config:\n  progressdb:version: "0.2.1"\n`);
    write("README.md", "changed\n");
    await commit("upgrade everything");
    expect(await picks([base, "HEAD"])).toBe("staging\napac\neu-west\nproduction\n");
    expect(JSON.parse(await picks(["--format", "json", base, "HEAD"]))).toEqual({ stacks: ["staging", "apac", "eu-west", "production"], staging: ["staging"], others: ["apac", "eu-west"], production: ["production"], any: true });
    expect(await picks(["--format", "github", base, "HEAD"])).toBe('stacks=["staging","apac","eu-west","production"]\nstaging=["staging"]\nothers=["apac","eu-west"]\nproduction=["production"]\nany=true\n');
    expect(await picks([base, "HEAD"], { PDB_CI_IGNORE_STACKS: "" })).toBe("staging\napac\neu-west\nlocal\nproduction\n");
    const docsOnly = await git("rev-parse", "HEAD");
    write("README.md", "again\n");
    await commit("docs");
    expect(await picks([docsOnly, "HEAD"])).toBe("");
    expect(await picks(["--format", "github", docsOnly, "HEAD"])).toBe("stacks=[]\nstaging=[]\nothers=[]\nproduction=[]\nany=false\n");
  });

  test("a pull request: only what the branch changed since it forked (base...head), not what main did meanwhile", async () => {
    await git("checkout", "-q", "-b", "pr2", base);
    write("Pulumi.production.yaml", 'config:\n  progressdb:version: "0.2.2"\n');
    const pr = await commit("production only");
    await git("checkout", "-q", "-b", "main2", base);
    write("Pulumi.staging.yaml", 'config:\n  progressdb:version: "0.2.9"\n');
    const mainTip = await commit("main moved on");
    expect(await picks([mainTip, pr])).toBe("production\n");
  });

  test("a deleted stack file picks nothing; a renamed one picks its new name; a program change picks every stack only with --all-on-program-change", async () => {
    await git("checkout", "-q", "-b", "pr3", base);
    await git("rm", "-q", "Pulumi.apac.yaml");
    await git("mv", "Pulumi.eu-west.yaml", "Pulumi.eu-central.yaml");
    await commit("drop apac, rename eu-west");
    expect(await picks([base, "HEAD"])).toBe("eu-central\n");
    const before = await git("rev-parse", "HEAD");
    write("index.ts", "export const changed = 1;\n");
    await commit("program change");
    expect(await picks([before, "HEAD"])).toBe("");
    expect(await picks(["--all-on-program-change", before, "HEAD"])).toBe("staging\neu-central\nproduction\n");
  });

  test("--stacks (a manual run): the named stacks in deploy order; an unknown or ignored one fails", async () => {
    expect(JSON.parse(await picks(["--format", "json", "--stacks", "production staging eu-central"]))).toEqual({ stacks: ["staging", "eu-central", "production"], staging: ["staging"], others: ["eu-central"], production: ["production"], any: true });
    for (const bad of ["nope", "local", "../x"]) {
      const r = await run("bash", [path.join(CI, "changed-stacks.sh"), "--stacks", bad], { cwd: repo });
      expect(r.code, bad).toBe(2);
    }
  });

  test("bad input fails loudly: an unknown revision, a missing argument", async () => {
    const r = await run("bash", [path.join(CI, "changed-stacks.sh"), "0000000000000000000000000000000000000000", "HEAD"], { cwd: repo });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("is not a commit here (fetch it: actions/checkout with fetch-depth: 0)");
    expect((await run("bash", [path.join(CI, "changed-stacks.sh"), "HEAD"], { cwd: repo })).code).toBe(2);
  });
});

describe("scripts/ci/pr-comment.sh against a stand-in gh", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdb-pr-comment-"));
    mkdirSync(path.join(dir, "bin"));
    // gh: the listing answers $COMMENTS through the --jq filter (real jq); writes are logged.
    writeFileSync(
      path.join(dir, "bin", "gh"),
      `#!/bin/sh
log="$GH_LOG"; printf '%s\\n' "$*" >>"$log"
case "$*" in
  *--method*) exit 0 ;;
esac
while [ $# -gt 0 ]; do [ "$1" = --jq ] && { jq -r "$2" "$COMMENTS"; exit; }; shift; done
exit 1
`,
    );
    chmodSync(path.join(dir, "bin", "gh"), 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const post = async (comments: unknown[]) => {
    const log = path.join(dir, `gh-${Math.random().toString(16).slice(2)}.log`);
    writeFileSync(path.join(dir, "comments.json"), JSON.stringify(comments));
    const body = path.join(dir, "preview.md");
    writeFileSync(body, "#### :tropical_drink: `preview` on progressdb/staging\n\nfailed\n");
    const r = await run("bash", [path.join(CI, "pr-comment.sh"), "17", body], {
      env: { PATH: `${path.join(dir, "bin")}:/usr/bin:/bin`, GH_LOG: log, COMMENTS: path.join(dir, "comments.json"), GITHUB_REPOSITORY: "acme/progressdb-upgrades" },
    });
    expect(r.code, r.stderr).toBe(0);
    return readFileSync(log, "utf8").trim().split("\n").filter((l) => l.includes("--method"));
  };

  test("edits the stack's own comment (same heading) when there is one, else posts a new one", async () => {
    const mine = { id: 501, body: "#### :tropical_drink: `preview` on progressdb/staging\n\n<details>" };
    const other = { id: 502, body: "#### :tropical_drink: `preview` on progressdb/production\n\n<details>" };
    expect(await post([mine, other])).toEqual([`api --method PATCH repos/acme/progressdb-upgrades/issues/comments/501 -F body=@${path.join(dir, "preview.md")}`]);
    expect(await post([other])).toEqual([`api --method POST repos/acme/progressdb-upgrades/issues/17/comments -F body=@${path.join(dir, "preview.md")}`]);
  });
});
