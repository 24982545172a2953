// The dynamic resources' provider code, cached between runs (components/dynamicResource.ts): on a
// miss it is what the SDK's own serialization gives (so no stack sees a diff), and a later run
// takes it from the cache file of the program's current sources.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { afterAll, afterEach, describe, expect, test, vi } from "vitest";
import { providerCacheFile } from "../../components/dynamicResource";
import { healthProvider } from "../../components/healthCheck";
import { runProgram } from "./programHarness";
import { TEST_SECRETS, binaryConfig } from "./fixtures";

// A cache of this file's own: what it writes never reaches a real run.
vi.hoisted(async () => {
  const { mkdtempSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  process.env.PROGRESSDB_PROVIDER_CACHE_DIR = mkdtempSync(`${tmpdir()}/pdb-provider-cache-`);
});

const HEALTH = "pulumi-nodejs:dynamic/health:HealthCheck";
const file = providerCacheFile(HEALTH);
// As pulumi.dynamic.Resource serializes its provider argument.
const sdkSerialization = (provider: pulumi.dynamic.ResourceProvider) => pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true });
const run = () => runProgram({ ...binaryConfig(), ...TEST_SECRETS }, Object.keys(TEST_SECRETS));

describe("a dynamic resource's provider code", () => {
  afterEach(() => rmSync(file, { force: true }));
  afterAll(() => rmSync(String(process.env.PROGRESSDB_PROVIDER_CACHE_DIR), { recursive: true, force: true }));

  test("on a cache miss is the SDK's serialization of the provider, and is written to the cache", async () => {
    rmSync(file, { force: true });
    const code = (await run()).byName("progressdb-health").inputs.__provider;
    const sdk = await sdkSerialization(healthProvider);
    expect(sdk.containsSecrets).toBe(false);
    expect(code).toBe(sdk.text);
    expect(existsSync(file)).toBe(true);
    expect(readFileSync(file, "utf8")).toBe(sdk.text);
  });

  test("is read from the cache file of the program's current sources", async () => {
    // A marker no serialization produces: seeing it proves the run read the file.
    const marker = "exports.handler = undefined; // cached";
    writeFileSync(file, marker);
    expect((await run()).byName("progressdb-health").inputs.__provider).toBe(marker);
  });

  test("is keyed by the program's sources: the cache file names their hash", () => {
    expect(file.startsWith(`${process.env.PROGRESSDB_PROVIDER_CACHE_DIR}/`)).toBe(true);
    expect(file).toMatch(/\/[0-9a-f]{32}-pulumi-nodejs-dynamic-health-HealthCheck\.js$/);
  });
});
