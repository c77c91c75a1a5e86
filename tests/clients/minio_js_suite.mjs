// MinIO's JavaScript client (npm `minio`, its own signing and multipart code) through Chmura,
// default settings but for the endpoint and the credentials. TLS trust comes from
// NODE_EXTRA_CA_CERTS. Usage: node minio_js_suite.mjs ENDPOINT BUCKET
// Prints "ok <step>" per step and "minio-js suite OK" at the end; exits non-zero on a failure.
import { createRequire } from "node:module";
import { Readable } from "node:stream";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(process.env.CHMURA_JS_MODULES + "/");
const Minio = require("minio");

const [endpoint, b] = process.argv.slice(2);
const url = new URL(endpoint);
const c = new Minio.Client({
  endPoint: url.hostname,
  port: Number(url.port),
  useSSL: url.protocol === "https:",
  accessKey: process.env.AWS_ACCESS_KEY_ID,
  secretKey: process.env.AWS_SECRET_ACCESS_KEY,
  region: "us-east-1",
  pathStyle: true,
});
function check(cond, msg) {
  if (!cond) {
    console.error("FAIL:", msg);
    process.exit(1);
  }
  console.log("ok", msg);
}
async function read(stream) {
  const parts = [];
  for await (const x of stream) parts.push(x);
  return Buffer.concat(parts);
}
async function names(it) {
  const out = [];
  for await (const o of it) out.push(o.name ? `${o.name}:${o.size}` : `prefix:${o.prefix}`);
  return out.sort();
}

const dir = mkdtempSync(join(tmpdir(), "minio-js-"));
check(!(await c.bucketExists(b)), "bucketExists before makeBucket");
await c.makeBucket(b, "us-east-1");
check(await c.bucketExists(b), "bucketExists after makeBucket");
const small = randomBytes(1000);
await c.putObject(b, "small", small, small.length, { "Content-Type": "text/x-test", "X-Amz-Meta-Colour": "green" });
const st = await c.statObject(b, "small");
check(st.size === 1000 && st.metaData["colour"] === "green" && st.metaData["content-type"] === "text/x-test", "statObject: size and metadata");
check((await read(await c.getObject(b, "small"))).equals(small), "getObject");
check((await read(await c.getPartialObject(b, "small", 10, 20))).equals(small.subarray(10, 30)), "getPartialObject");

// 70 MiB from a file: a multipart upload in minio-js's 64 MiB parts.
const big = randomBytes(70 * 1024 * 1024 + 5);
writeFileSync(join(dir, "big"), big);
await c.fPutObject(b, "dir/big", join(dir, "big"), {});
check((await c.statObject(b, "dir/big")).size === big.length, "fPutObject multipart: plaintext size");
// An unfinished upload of a key (what an interrupted upload leaves): minio-js finds it in
// ListMultipartUploads and continues it, with the UploadId listed.
await c.initiateNewMultipartUpload(b, "dir/resumed", {});
await c.fPutObject(b, "dir/resumed", join(dir, "big"), {});
check((await c.statObject(b, "dir/resumed")).size === big.length, "fPutObject continues the unfinished upload it lists");
const unfinished = [];
for await (const u of c.listIncompleteUploads(b, "dir/", true)) unfinished.push(u.key);
check(unfinished.length === 0, "no unfinished upload left: " + unfinished);
await c.removeObject(b, "dir/resumed");
await c.fGetObject(b, "dir/big", join(dir, "big.back"));
check(readFileSync(join(dir, "big.back")).equals(big), "fGetObject round trip");
check((await read(await c.getPartialObject(b, "dir/big", 64 * 1024 * 1024 - 3, 10))).equals(big.subarray(64 * 1024 * 1024 - 3, 64 * 1024 * 1024 + 7)), "range across the part boundary");

// A stream of unknown length: multipart as it goes.
await c.putObject(b, "dir/stream", Readable.from([big.subarray(0, 20e6), big.subarray(20e6, 40e6)]));
check((await read(await c.getObject(b, "dir/stream"))).equals(big.subarray(0, 40e6)), "putObject of a stream round trip");

await c.copyObject(b, "copy", `/${b}/small`, new Minio.CopyConditions());
check((await read(await c.getObject(b, "copy"))).equals(small), "copyObject");

check(JSON.stringify(await names(c.listObjectsV2(b, "", true))) === JSON.stringify(["copy:1000", `dir/big:${big.length}`, "dir/stream:40000000", "small:1000"].sort()), "listObjectsV2 recursive, plaintext sizes");
check(JSON.stringify(await names(c.listObjects(b, "", false))) === JSON.stringify(["copy:1000", "prefix:dir/", "small:1000"].sort()), "listObjects by folder");

await c.setObjectTagging(b, "small", { team: "blue" });
const tags = await c.getObjectTagging(b, "small");
check(tags.length === 1 && tags[0].Key === "team" && tags[0].Value === "blue", "object tagging");

const get = await fetch(await c.presignedGetObject(b, "small", 60));
check(get.status === 200 && Buffer.from(await get.arrayBuffer()).equals(small), "presigned GET");
const put = await fetch(await c.presignedPutObject(b, "presigned", 60), { method: "PUT", body: small.subarray(0, 99) });
check(put.status === 200, "presigned PUT " + put.status);
check((await read(await c.getObject(b, "presigned"))).equals(small.subarray(0, 99)), "presigned PUT round trip");

await c.removeObjects(b, ["copy", "dir/stream", "presigned"]);
await c.removeObject(b, "dir/big");
check(JSON.stringify(await names(c.listObjectsV2(b, "", true))) === JSON.stringify(["small:1000"]), "removeObjects / removeObject");
try {
  await c.statObject(b, "dir/big");
  check(false, "statObject of a removed object");
} catch (e) {
  check(e.code === "NotFound", "statObject of a removed object: " + e.code);
}
console.log("minio-js suite OK");
