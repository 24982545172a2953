// Pure helpers of the container deployment (no engine, no mocks).
import { describe, expect, test } from "vitest";
import { IMAGE_LABEL, VERSION_LABEL, dataMountOf, hostDbPath, imageRef, previousImageRef } from "../../components/containerDeployment";
import { familyOf } from "../../components/releases";

const c = { image: "docker.io/progressdb/progressdb", digest: undefined as string | undefined };
const digest = `sha256:${"a".repeat(64)}`;
const tagOf = (v: string) => familyOf(v).imageTag(v);

describe("imageRef", () => {
  test("is image:v<version> (the real images' tag; 0.2.x has no bare 0.2.1 tag), or image@digest when a digest pins it", () => {
    expect(imageRef(c, tagOf("0.2.1"))).toBe("docker.io/progressdb/progressdb:v0.2.1");
    expect(imageRef(c, tagOf("0.1.2"))).toBe("docker.io/progressdb/progressdb:v0.1.2");
    expect(imageRef({ ...c, digest }, tagOf("0.2.1"))).toBe(`docker.io/progressdb/progressdb@${digest}`);
  });
});

describe("previousImageRef", () => {
  test("names the image the previous version ran on", () => {
    expect(previousImageRef(c, "0.2.1", "0.1.2", tagOf)).toBe("docker.io/progressdb/progressdb:v0.1.2");
  });
  test("is empty on a first deploy, for an unknown previous version, or a re-run of the same version", () => {
    expect(previousImageRef(c, "0.2.1", "", tagOf)).toBe("");
    expect(previousImageRef(c, "0.2.1", undefined, tagOf)).toBe("");
    expect(previousImageRef(c, "0.2.1", "unknown", tagOf)).toBe("");
    expect(previousImageRef(c, "0.2.1", "0.2.1", tagOf)).toBe("");
  });
});

describe("the data mount and the database in it", () => {
  test("the host steps work on <storage.dbPath>/progressdb (the container's /data/progressdb); the mount is its parent", () => {
    expect(hostDbPath("/srv/progressdb/data")).toBe("/srv/progressdb/data/progressdb");
    expect(hostDbPath("/srv/progressdb/data/")).toBe("/srv/progressdb/data/progressdb");
    expect(dataMountOf(hostDbPath("/srv/progressdb/data"))).toBe("/srv/progressdb/data");
  });
  test("a dbPath that is not <mount>/progressdb is refused, naming it", () => {
    expect(() => dataMountOf("/srv/progressdb/data")).toThrow(/must be <storage.dbPath>\/progressdb, got "\/srv\/progressdb\/data"/);
  });
});

test("the labels the host scripts read are stable names", () => {
  expect(VERSION_LABEL).toBe("progressdb.version");
  expect(IMAGE_LABEL).toBe("progressdb.image");
});
