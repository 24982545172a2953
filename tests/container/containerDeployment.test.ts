// Pure helpers of the container deployment (no engine, no mocks).
import { describe, expect, test } from "vitest";
import { IMAGE_LABEL, VERSION_LABEL, imageRef, previousImageRef } from "../../components/containerDeployment";

const c = { image: "docker.io/progressdb/progressdb", digest: undefined as string | undefined };
const digest = `sha256:${"a".repeat(64)}`;

describe("imageRef", () => {
  test("is image:version, or image@digest when a digest pins it", () => {
    expect(imageRef(c, "0.2.0")).toBe("docker.io/progressdb/progressdb:0.2.0");
    expect(imageRef({ ...c, digest }, "0.2.0")).toBe(`docker.io/progressdb/progressdb@${digest}`);
  });
});

describe("previousImageRef", () => {
  test("names the image the previous version ran on", () => {
    expect(previousImageRef(c, "0.2.0", "0.1.2")).toBe("docker.io/progressdb/progressdb:0.1.2");
  });
  test("is empty on a first deploy, for an unknown previous version, or a re-run of the same version", () => {
    expect(previousImageRef(c, "0.2.0", "")).toBe("");
    expect(previousImageRef(c, "0.2.0", undefined)).toBe("");
    expect(previousImageRef(c, "0.2.0", "unknown")).toBe("");
    expect(previousImageRef(c, "0.2.0", "0.2.0")).toBe("");
  });
});

test("the labels the host scripts read are stable names", () => {
  expect(VERSION_LABEL).toBe("progressdb.version");
  expect(IMAGE_LABEL).toBe("progressdb.image");
});
