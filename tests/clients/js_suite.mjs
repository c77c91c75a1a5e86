// The AWS SDK for JavaScript v3 through Chmura, default client settings (endpoint, region,
// credentials from the environment, path-style). TLS trust comes from NODE_EXTRA_CA_CERTS.
// Usage: node js_suite.mjs ENDPOINT BUCKET MULTIPART(yes|no)
import { createRequire } from "node:module";
import { Readable } from "node:stream";
import { createHash, randomBytes } from "node:crypto";

const require = createRequire(process.env.CHMURA_JS_MODULES + "/");
const { S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } = require("@aws-sdk/client-s3");
const { Upload } = require("@aws-sdk/lib-storage");

const [endpoint, bucket, multipart] = process.argv.slice(2);
const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true });
const sha = (b) => createHash("sha256").update(b).digest("hex");
function check(cond, msg) {
  if (!cond) {
    console.error("FAIL:", msg);
    process.exit(1);
  }
}
async function read(body) {
  const parts = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts);
}

// A streamed body of unknown shape: the SDK frames it as aws-chunked with a CRC32 trailer.
const data = randomBytes(300_000);
await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "js/stream.bin", Body: Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), ContentLength: data.length }));
let got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "js/stream.bin" }));
check(sha(await read(got.Body)) === sha(data), "streamed put/get round trip");
// A buffer body.
const small = randomBytes(70_000);
await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "js/buffer.bin", Body: small }));
got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "js/buffer.bin", Range: "bytes=100-199" }));
check(sha(await read(got.Body)) === sha(small.subarray(100, 200)), "range read");
const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "js/buffer.bin" }));
check(head.ContentLength === 70_000, "head length " + head.ContentLength);
const list = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "js/" }));
check((list.Contents || []).length >= 2, "listing");

if (multipart === "yes") {
  // lib-storage: 12 MiB in 5 MiB parts, 4 at a time.
  const big = randomBytes(12 * 1024 * 1024 + 3);
  await new Upload({ client: s3, params: { Bucket: bucket, Key: "js/big.bin", Body: Readable.from([big]) }, queueSize: 4, partSize: 5 * 1024 * 1024 }).done();
  got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "js/big.bin" }));
  check(sha(await read(got.Body)) === sha(big), "lib-storage multipart round trip");
}
console.log("js suite OK");
