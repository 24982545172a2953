import { describe, expect, test } from "vitest";
import { ConfigError, compareVersions, crossingProblem, downgradeProblem, parseSettings } from "../../components/config";
import { binaryConfig, containerConfig, rawConfig } from "./fixtures";

function problemsOf(values: Record<string, unknown>, secrets = {}): string[] {
  try {
    parseSettings(rawConfig(values, secrets));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error("config was accepted");
}

function set(path: string, value: unknown, base = binaryConfig()): Record<string, unknown> {
  const copy = structuredClone(base);
  const keys = path.split(".");
  let node = copy as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) node = node[k] as Record<string, unknown>;
  if (value === undefined) delete node[keys.at(-1)!];
  else node[keys.at(-1)!] = value;
  return copy;
}

describe("parseSettings accepts", () => {
  test("the local binary stack, filling documented defaults", () => {
    const s = parseSettings(rawConfig(binaryConfig("v0.2.0")));
    expect(s.version).toBe("0.2.0");
    expect(s.deployment.binary.keepReleases).toBe(3);
    expect(s.deployment.binary.arch).toBe("amd64");
    expect(s.backup.prefix).toBe("progressdb-backups");
    expect(s.backup.retentionDays).toBe(30);
    expect(s.health.intervalSeconds).toBe(2);
    expect(s.kms.mode).toBe("embedded");
    expect(s.allowDowngrade).toBe(false);
    expect(s.restore.backup).toBeUndefined();
  });

  test("container mode with its defaults", () => {
    const s = parseSettings(rawConfig(containerConfig()));
    expect(s.deployment.container?.name).toBe("progressdb");
    expect(s.deployment.container?.restart).toBe("unless-stopped");
  });
});

describe("parseSettings rejects, naming the key and the fix", () => {
  test.each([
    ["a missing version", set("version", undefined), "progressdb:version is required", "pulumi config set progressdb:version"],
    ["a non-semver version", set("version", "0.2"), "progressdb:version must be an exact semver release", ""],
    ["latest", set("version", "latest"), "progressdb:version \"latest\" is not allowed", ""],
    ["an unknown mode", set("deployment.mode", "vm"), "progressdb:deployment.mode must be \"binary\" or \"container\"", ""],
    ["a missing mode", set("deployment.mode", undefined), "progressdb:deployment.mode is required", "pulumi config set --path progressdb:deployment.mode"],
    ["binary mode without host", set("deployment.host", undefined), "progressdb:deployment.host is required in binary mode", "pulumi config set --path progressdb:deployment.host.address"],
    ["container mode without image settings", set("deployment.container", undefined, containerConfig()), "progressdb:deployment.container is required when deployment.mode is \"container\"", "pulumi config set --path progressdb:deployment.container.image"],
    ["an unknown service manager", set("deployment.binary.serviceManager", "runit"), "progressdb:deployment.binary.serviceManager must be one of systemd, supervisor, process", ""],
    ["backup enabled without bucket", set("backup.bucket", undefined), "progressdb:backup.bucket is required when backup.enabled is true", "pulumi config set --path progressdb:backup.bucket"],
    ["an invalid bucket name", set("backup.bucket", "My_Backups"), "progressdb:backup.bucket must be an S3 bucket name", ""],
    ["a non-http backup endpoint", set("backup.endpoint", "ftp://x"), "progressdb:backup.endpoint must be an http(s) URL", ""],
    ["a non-http(s) health URL", set("health.url", "ftp://10.0.0.5"), "progressdb:health.url must be an http:// or https:// URL", ""],
    ["a missing health URL", set("health.url", undefined), "progressdb:health.url is required", "pulumi config set --path progressdb:health.url"],
    ["a zero timeout", set("health.timeoutSeconds", 0), "progressdb:health.timeoutSeconds must be greater than 0", ""],
    ["a negative interval", set("health.intervalSeconds", -1), "progressdb:health.intervalSeconds must be greater than 0", ""],
    ["a typo'd key", set("health.timeout", 5), "progressdb:health", "timeout"],
    ["external KMS without endpoint", set("kms", { mode: "external" }), "progressdb:kms.endpoint is required when kms.mode is \"external\"", "pulumi config set --path progressdb:kms.endpoint"],
    ["a restore without a backup bucket", { ...set("backup", { enabled: false }), restore: { backup: "before:0.2.0" } }, "progressdb:backup.bucket is required when restore.backup is set", "pulumi config set --path progressdb:backup.bucket"],
    ["a malformed restore request", set("restore", { backup: "yesterday" }), "progressdb:restore.backup must be s3://<bucket>/<key>.tar.gz or before:<version>", ""],
  ])("%s", (_label, values, message, fix) => {
    const problems = problemsOf(values);
    const hit = problems.find((p) => p.includes(message));
    expect(hit, `expected a problem containing ${JSON.stringify(message)}, got ${JSON.stringify(problems)}`).toBeDefined();
    expect(hit).toContain(fix);
  });

  test("embedded KMS without a master key secret", () => {
    const problems = problemsOf(binaryConfig(), { kmsMasterKeyHex: "absent" });
    expect(problems).toEqual([expect.stringContaining("progressdb:kmsMasterKeyHex is required when kms.mode is \"embedded\"")]);
    expect(problems[0]).toContain("pulumi config set --secret progressdb:kmsMasterKeyHex");
  });

  test("no master key is needed when KMS is external", () => {
    const s = parseSettings(rawConfig(set("kms", { mode: "external", endpoint: "127.0.0.1:6820" }), { kmsMasterKeyHex: "absent" }));
    expect(s.secretsPresent.kmsMasterKeyHex).toBe(false);
  });

  test("a secret given in plain text", () => {
    const problems = problemsOf(binaryConfig(), { sshPrivateKey: "plaintext" });
    expect(problems[0]).toContain("progressdb:sshPrivateKey is stored in plain text");
    expect(problems[0]).toContain("pulumi config set --secret progressdb:sshPrivateKey");
  });

  test("a missing SSH key", () => {
    expect(problemsOf(binaryConfig(), { sshPrivateKey: "absent" })[0]).toContain("progressdb:sshPrivateKey is required");
  });

  test("the API keys the managed service config needs, each named with its fix", () => {
    const problems = problemsOf(binaryConfig("0.2.1"), { apiKey: "absent", adminApiKey: "absent", signingKey: "absent" });
    expect(problems).toEqual([
      expect.stringContaining("progressdb:apiKey is required: it goes into the service config the program writes"),
      expect.stringContaining("progressdb:adminApiKey is required"),
      expect.stringContaining("progressdb:signingKey is required when version is 0.2.1: 0.2.x will not start without a signing key"),
    ]);
    expect(problems[2]).toContain("pulumi config set --secret progressdb:signingKey");
    // 0.1.x has no signing keys (its backend keys sign).
    expect(() => parseSettings(rawConfig(binaryConfig("0.1.2"), { signingKey: "absent" }))).not.toThrow();
  });

  test("the smoke test without an API key, where the operator manages the config file", () => {
    const operatorManaged = set("deployment.binary.configFile", "/etc/progressdb/config.yaml");
    expect(problemsOf({ ...operatorManaged, health: { url: "http://127.0.0.1:18080", smokeTest: true } }, { apiKey: "absent" })[0]).toContain(
      "progressdb:apiKey is required when health.smokeTest is true",
    );
  });

  test("field encryption without the embedded KMS", () => {
    expect(problemsOf({ ...binaryConfig(), service: { encryptFields: ["body"] }, kms: { mode: "disabled" } }, { kmsMasterKeyHex: "absent" })[0]).toContain(
      "progressdb:service.encryptFields needs kms.mode \"embedded\"",
    );
  });

  test("half of a pair of S3 credentials", () => {
    expect(problemsOf(binaryConfig(), { s3AccessKeyId: "secret" })[0]).toContain("progressdb:s3AccessKeyId and progressdb:s3SecretAccessKey go together");
  });

  test("every problem at once, not just the first", () => {
    const problems = problemsOf({ ...binaryConfig(), version: "latest", health: { url: "nope" } });
    expect(problems.length).toBeGreaterThanOrEqual(2);
  });
});

describe("compareVersions", () => {
  test.each([
    ["0.1.2", "0.2.0", -1],
    ["0.2.0", "0.2.0", 0],
    ["0.2.1", "0.2.0", 1],
    ["0.10.0", "0.9.9", 1],
    ["0.2.0-rc.1", "0.2.0", -1],
  ])("%s vs %s", (a, b, want) => {
    expect(compareVersions(a, b)).toBe(want);
  });
});

describe("downgradeProblem", () => {
  const s = { allowDowngrade: false, restore: {} };
  test("within a family: refuses, naming the restore and the override", () => {
    const p = downgradeProblem("0.2.1", "0.2.2", s)?.refusal;
    expect(p).toContain("progressdb:version 0.2.1 is lower than the deployed 0.2.2");
    expect(p).toContain("pulumi config set --path progressdb:restore.backup before:0.2.2");
    expect(p).toContain("pulumi config set progressdb:allowDowngrade true");
  });
  test("across the data format without kept data: refuses, and the override does not help", () => {
    for (const settings of [s, { allowDowngrade: true, restore: {} }]) {
      const p = downgradeProblem("0.1.2", "0.2.1", settings)?.refusal;
      expect(p).toContain("0.1.2 cannot read the data 0.2.1 wrote");
      expect(p).toContain("pulumi config set --path progressdb:restore.backup before:0.2.1");
    }
  });
  test("across the data format with the data kept for that version: goes on, warning about later writes", () => {
    const kept = { path: "/var/lib/progressdb/data.v0.1.2-kept-before-v0.2.1", version: "0.1.2", at: "2026-11-29T05:00:00Z" };
    const v = downgradeProblem("0.1.2", "0.2.1", s, kept);
    expect(v?.refusal).toBeUndefined();
    expect(v?.warning).toContain("Writes made after 2026-11-29T05:00:00Z are NOT in it");
    expect(downgradeProblem("0.1.1", "0.2.1", s, kept)?.refusal).toContain("cannot read");
  });
  test.each([
    ["an upgrade", "0.2.2", "0.2.1", s],
    ["the same version", "0.2.1", "0.2.1", s],
    ["a first deploy", "0.1.2", undefined, s],
    ["the override", "0.2.1", "0.2.2", { allowDowngrade: true, restore: {} }],
    ["a restore", "0.1.2", "0.2.1", { allowDowngrade: false, restore: { backup: "before:0.2.1" } }],
  ])("does not fire for %s", (_l, requested, deployed, settings) => {
    expect(downgradeProblem(requested, deployed, settings)).toBeUndefined();
  });
});

describe("crossingProblem", () => {
  const enc = { service: { encryptFields: ["body"] } } as Parameters<typeof crossingProblem>[2];
  const plain = { service: { encryptFields: [] } } as unknown as Parameters<typeof crossingProblem>[2];
  test("refuses 0.1 → 0.2 with field encryption, naming the key and keeping the deployed version", () => {
    const p = crossingProblem("0.2.1", "0.1.2", enc);
    expect(p).toContain('progressdb:service.encryptFields is ["body"]');
    expect(p).toContain("0.1.2 keeps running");
  });
  test("no problem within a family, on a first deploy, or without encrypted fields", () => {
    expect(crossingProblem("0.2.2", "0.2.1", enc)).toBeUndefined();
    expect(crossingProblem("0.2.1", undefined, enc)).toBeUndefined();
    expect(crossingProblem("0.2.1", "0.1.2", plain)).toBeUndefined();
  });
});
