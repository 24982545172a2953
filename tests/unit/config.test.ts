import { generateKeyPairSync } from "node:crypto";
import { describe, expect, test } from "vitest";
import { ConfigError, compareVersions, crossingProblem, downgradeProblem, parseSettings, secretWellFormed } from "../../components/config";
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
    ["external KMS, which the real 0.2.1 cannot read through", set("kms", { mode: "external" }), "progressdb:kms.mode \"external\" is not supported: the real 0.2.1 fails reads through prgkms", "Use \"embedded\""],
    ["kms.endpoint, which nothing would use", set("kms", { mode: "embedded", endpoint: "127.0.0.1:6820" }), "progressdb:kms", "endpoint"],
    ["a restore without a backup bucket", { ...set("backup", { enabled: false }), restore: { backup: "before:0.2.0" } }, "progressdb:backup.bucket is required when restore.backup is set", "pulumi config set --path progressdb:backup.bucket"],
    ["a malformed restore request", set("restore", { backup: "yesterday" }), "progressdb:restore.backup must be s3://<bucket>/<key>.tar.zst (or .tar.gz) or before:<version>", ""],
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

  test("no master key is needed when KMS is disabled", () => {
    const s = parseSettings(rawConfig(set("kms", { mode: "disabled" }), { kmsMasterKeyHex: "absent" }));
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

// Issue 13: values that could hurt the host, leak a secret or break the service, refused at preview.
describe("parseSettings refuses values that could hurt the host", () => {
  const nested = (path: string, value: unknown, base = binaryConfig()) => set(path, value, base);
  test.each([
    // finding 1: the SSH host key
    ["no host key and no explicit skip", set("deployment.host", { address: "10.0.0.5", port: 2200 }), "progressdb:deployment.host.hostKey is required: without it anyone who can intercept the SSH connection receives the secrets the program sends — set it with: ssh-keyscan -p 2200 -t ed25519 10.0.0.5 | pulumi config set --path progressdb:deployment.host.hostKey"],
    ["a host key that is not a public key", nested("deployment.host.hostKey", "10.0.0.5 not-a-key"), "progressdb:deployment.host.hostKey must be the host's public key as ssh-keyscan prints it"],
    // finding 3: overlapping or system paths
    ["dbPath inside installDir's staging", nested("storage.dbPath", "/srv/progressdb/opt/staging/data"), "progressdb:storage.dbPath (/srv/progressdb/opt/staging/data) overlaps progressdb:deployment.binary.installDir"],
    ["dbPath equal to installDir with a trailing slash", nested("storage.dbPath", "/srv/progressdb/opt/"), "progressdb:storage.dbPath (/srv/progressdb/opt) overlaps progressdb:deployment.binary.installDir (/srv/progressdb/opt): deployment.binary.installDir is the same directory as storage.dbPath"],
    ["dbPath a parent of installDir", nested("storage.dbPath", "/srv/progressdb"), "progressdb:storage.dbPath (/srv/progressdb) overlaps progressdb:deployment.binary.installDir (/srv/progressdb/opt): deployment.binary.installDir is inside storage.dbPath"],
    ["dbPath reached through ..", nested("storage.dbPath", "/srv/progressdb/x/../opt/y"), "progressdb:storage.dbPath (/srv/progressdb/opt/y) overlaps"],
    ["kmsDataDir equal to installDir", nested("storage.kmsDataDir", "/srv/progressdb/opt"), "progressdb:storage.kmsDataDir (/srv/progressdb/opt) overlaps progressdb:deployment.binary.installDir"],
    ["dbPath /etc", nested("storage.dbPath", "/etc"), "progressdb:storage.dbPath (/etc) is a system directory"],
    ["installDir inside /usr", nested("deployment.binary.installDir", "/usr/lib/progressdb"), "progressdb:deployment.binary.installDir (/usr/lib/progressdb) is inside the system directory /usr"],
    ["a relative dbPath", nested("storage.dbPath", "data"), "progressdb:storage.dbPath must be an absolute path"],
    // finding 4: control characters
    ["a carriage return in installDir", nested("deployment.binary.installDir", "/srv/progressdb/opt\rExecStart=/bin/sh -c id"), "progressdb:deployment.binary.installDir contains a control character (\\x0d)"],
    ["a newline in serviceName", nested("deployment.binary.serviceName", "progressdb\n[program:evil]"), "progressdb:deployment.binary.serviceName contains a control character (\\x0a)"],
    ["a carriage return in a header value", nested("health.headers", { "X-Tenant": "a\r\nX-Evil: 1" }), "progressdb:health.headers.X-Tenant contains a control character"],
    ["a control character in a map key", nested("health.headers", { "X\u0000": "a" }), "progressdb:health.headers has a key with a control character (\\x00)"],
    // finding 5: credentials in URLs
    ["userinfo in health.url", nested("health.url", "http://admin:pw@127.0.0.1:18080"), "progressdb:health.url must not carry credentials (user:pass@)"],
    ["userinfo in backup.endpoint", nested("backup.endpoint", "https://AKIA:secret@s3.example.com"), "progressdb:backup.endpoint must not carry credentials"],
    ["userinfo in artifactUrl", nested("deployment.binary.artifactUrl", "https://u:p@mirror.example.com/{version}.tar.gz"), "progressdb:deployment.binary.artifactUrl must not carry credentials"],
    ["API keys over http:// to another host", nested("health.url", "http://10.0.0.5:8080"), "progressdb:health.url is plain http:// to 10.0.0.5:8080, and the health check sends progressdb:apiKey and progressdb:adminApiKey there"],
    // finding 9: schema gaps
    ["an env key that is not a variable name", set("deployment.container.env", { "lower-case": "x" }, containerConfig()), "progressdb:deployment.container.env.lower-case must be an environment variable name"],
    ["an env key that names a secret", set("deployment.container.env", { PROGRESSDB_KMS_MASTER_KEY_HEX: "ab" }, containerConfig()), "progressdb:deployment.container.env.PROGRESSDB_KMS_MASTER_KEY_HEX names a secret"],
    ["no container port", set("deployment.container.ports", [], containerConfig()), "progressdb:deployment.container.ports must publish at least one port"],
    ["a duplicate external port", set("deployment.container.ports", [{ internal: 8080, external: 8080 }, { internal: 9090, external: 8080 }], containerConfig()), "progressdb:deployment.container.ports publishes the same external port twice"],
    ["a port 0", set("deployment.container.ports", [{ internal: 8080, external: 0 }], containerConfig()), "progressdb:deployment.container.ports.0.external must be 1–65535"],
    ["a listen port out of range", nested("deployment.binary.listenAddr", "0.0.0.0:70000"), "progressdb:deployment.binary.listenAddr must end in a port 1–65535"],
    ["an SSH port out of range", nested("deployment.host.port", 65536), "progressdb:deployment.host.port must be 1–65535"],
    ["a bucket with two adjacent dots", nested("backup.bucket", "a..b"), "progressdb:backup.bucket must be an S3 bucket name: no two adjacent dots"],
    ["an IP-like bucket", nested("backup.bucket", "192.168.1.1"), "progressdb:backup.bucket must be an S3 bucket name: not formatted like an IP address"],
    ["an xn-- bucket", nested("backup.bucket", "xn--backups"), "progressdb:backup.bucket must be an S3 bucket name: no reserved prefix"],
    ["an -s3alias bucket", nested("backup.bucket", "backups-s3alias"), "progressdb:backup.bucket must be an S3 bucket name: no reserved suffix"],
    ["an interval longer than the timeout", nested("health.intervalSeconds", 90), "progressdb:health.intervalSeconds (90) is greater than health.timeoutSeconds (60)"],
    ["an empty prerelease identifier", nested("version", "0.2.0-"), "progressdb:version must be an exact semver release"],
    ["a prerelease with an empty part", nested("version", "0.2.0-alpha..1"), "progressdb:version must be an exact semver release"],
    ["a prerelease with a leading zero", nested("version", "0.2.0-01"), "progressdb:version must be an exact semver release"],
    ["a tcp:// docker host", set("deployment.container.dockerHost", "tcp://10.0.0.5:2375", containerConfig()), "progressdb:deployment.container.dockerHost is a tcp:// daemon, without TLS"],
  ])("%s", (_label, values, message) => {
    const problems = problemsOf(values);
    expect(problems, JSON.stringify(problems)).toEqual(expect.arrayContaining([expect.stringContaining(message)]));
  });

  test("every rejection names a fix or the rule to follow", () => {
    for (const p of problemsOf(nested("storage.dbPath", "/srv/progressdb/opt/data"))) expect(p).toMatch(/use separate directories|pulumi config set/);
    expect(problemsOf(nested("deployment.binary.installDir", "/srv/x\ry"))[0]).toContain("pulumi config set --path progressdb:deployment.binary.installDir");
    expect(problemsOf(nested("health.url", "http://10.0.0.5:8080"))[0]).toContain("pulumi config set --path progressdb:health.url https://10.0.0.5:8080");
  });

  test("accepts what is safe: a PEM with line breaks, https or loopback http with keys, plaintext by explicit choice, a well-formed prerelease", () => {
    const pem = "-----BEGIN CERTIFICATE-----\r\nMIIB\n-----END CERTIFICATE-----\n";
    expect(() => parseSettings(rawConfig(nested("health", { url: "https://10.0.0.5:8443", caCertPem: pem, timeoutSeconds: 60 })))).not.toThrow();
    expect(() => parseSettings(rawConfig(nested("health", { url: "http://10.0.0.5:8080", allowPlaintextHttp: true })))).not.toThrow();
    expect(() => parseSettings(rawConfig(nested("health.url", "http://localhost:18080")))).not.toThrow();
    // Without any key to send, plain http to another host reveals nothing.
    const operatorManaged = nested("deployment.binary.configFile", "/etc/progressdb/config.yaml");
    expect(() => parseSettings(rawConfig(set("health.url", "http://10.0.0.5:8080", operatorManaged), { apiKey: "absent", adminApiKey: "absent" }))).not.toThrow();
    expect(parseSettings(rawConfig(nested("version", "0.2.0-alpha.1"))).version).toBe("0.2.0-alpha.1");
    expect(parseSettings(rawConfig(nested("storage.dbPath", "/srv/progressdb//data/"))).storage.dbPath).toBe("/srv/progressdb/data");
  });
});

describe("secret shapes", () => {
  test.each([
    ["kmsMasterKeyHex", "ab".repeat(31), false],
    ["kmsMasterKeyHex", "zz".repeat(32), false],
    ["kmsMasterKeyHex", `${"ab".repeat(32)}\n`, true],
    ["apiKey", "key with space", false],
    ["apiKey", "line\nbreak", false],
    ["apiKey", "sk_live-7f3a9c\n", true],
    // A multi-line PEM, made now (nothing key-shaped is committed): passed as it is.
    ["sshPrivateKey", generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString(), true],
  ] as const)("%s %j well-formed: %s", (key, value, ok) => {
    expect(secretWellFormed(key, value)).toBe(ok);
  });

  test("a malformed secret is refused, naming the key and the fix, never the value", () => {
    try {
      parseSettings({ ...rawConfig(binaryConfig()), malformed: ["kmsMasterKeyHex", "apiKey"] });
      throw new Error("config was accepted");
    } catch (e) {
      expect((e as ConfigError).problems).toEqual([
        expect.stringContaining("progressdb:kmsMasterKeyHex must be exactly 64 hex characters (a 32-byte key) — set it again with: openssl rand -hex 32 | pulumi config set --secret progressdb:kmsMasterKeyHex"),
        expect.stringContaining("progressdb:apiKey must be printable characters without spaces or line breaks"),
      ]);
    }
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
