"""boto3 through Chmura, default client settings (only endpoint, CA and credentials given).

Usage: boto3_suite.py ENDPOINT CA_FILE BUCKET WORKDIR [pass-through]
Exits non-zero with a message on the first failure.
"""
import base64
import hashlib
import os
import ssl
import sys
import urllib.request
import zlib

import boto3
from botocore.client import Config

endpoint, ca, bucket, work = sys.argv[1:5]
pass_through = sys.argv[5:6] == ["pass-through"]
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, region_name="us-east-1")


def check(cond, msg):
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


s3.create_bucket(Bucket=bucket)
body = os.urandom(300_000)
s3.put_object(Bucket=bucket, Key="small/obj.bin", Body=body)
got = s3.get_object(Bucket=bucket, Key="small/obj.bin")["Body"].read()
check(got == body, "get returns what put stored")
r = s3.get_object(Bucket=bucket, Key="small/obj.bin", Range="bytes=100-199")
check(r["Body"].read() == body[100:200], "range read")
check(r["ContentRange"] == "bytes 100-199/300000", "content-range " + str(r.get("ContentRange")))
h = s3.head_object(Bucket=bucket, Key="small/obj.bin")
check(h["ContentLength"] == 300_000, "head length")
lst = s3.list_objects_v2(Bucket=bucket, Prefix="small/")
check([o["Key"] for o in lst["Contents"]] == ["small/obj.bin"], "list v2")
check(lst["Contents"][0]["Size"] == 300_000, "listed size")

# upload_file / download_file: 20 MiB is multipart (8 MiB threshold) with parallel parts,
# and download_file uses parallel ranged GETs.
big = os.path.join(work, "big.bin")
with open(big, "wb") as f:
    f.write(os.urandom(20 * 1024 * 1024 + 123))
s3.upload_file(big, bucket, "big/file.bin")
out = os.path.join(work, "big.out")
s3.download_file(bucket, "big/file.bin", out)
digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
check(digest(big) == digest(out), "multipart round trip")

# Presigned URLs: SigV4 and SigV2 (boto3's default for custom endpoints may be either).
ctx = ssl.create_default_context(cafile=ca)
for version in ("s3v4", "s3"):
    c = boto3.client("s3", endpoint_url=endpoint, verify=ca, region_name="us-east-1",
                     config=Config(signature_version=version))
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "small/obj.bin"}, ExpiresIn=300)
    data = urllib.request.urlopen(url, context=ctx).read()
    check(data == body, "presigned GET " + version)
    bad = url.replace("small/obj.bin", "small/obj.bim")
    try:
        urllib.request.urlopen(bad, context=ctx)
        check(False, "tampered presigned URL accepted " + version)
    except urllib.error.HTTPError as e:
        check(e.code == 403, "tampered presigned URL status %d" % e.code)
        check(b"SignatureDoesNotMatch" in e.read(), "tampered presigned code")
    # A presigned PUT with a content type and metadata: SigV2 URLs carry them as query
    # parameters (the uploader need not send the metadata header), SigV4 URLs sign them as
    # headers the uploader sends.
    key = "small/presigned-put-" + version
    url = c.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ContentType": "text/plain", "Metadata": {"foo": "bar"}},
        ExpiresIn=300,
    )
    headers = {"Content-Type": "text/plain"}
    if version == "s3v4":
        headers["x-amz-meta-foo"] = "bar"
    put = urllib.request.Request(url, data=b"presigned body", method="PUT", headers=headers)
    urllib.request.urlopen(put, context=ctx).read()
    h = s3.head_object(Bucket=bucket, Key=key)
    check(h["ContentType"] == "text/plain", "presigned PUT content type %s: %r" % (version, h["ContentType"]))
    check(h["Metadata"] == {"foo": "bar"}, "presigned PUT metadata %s: %r" % (version, h["Metadata"]))
    check(s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"presigned body", "presigned PUT body " + version)
    s3.delete_object(Bucket=bucket, Key=key)
url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "small/obj.bin"}, ExpiresIn=300)
data = urllib.request.urlopen(url, context=ctx).read()
check(data == body, "default presigned GET")

s3.copy_object(Bucket=bucket, Key="small/copy.bin", CopySource={"Bucket": bucket, "Key": "small/obj.bin"})
check(s3.get_object(Bucket=bucket, Key="small/copy.bin")["Body"].read() == body, "copy")
s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "small/copy.bin"}, {"Key": "small/obj.bin"}]})
check(s3.list_objects_v2(Bucket=bucket, Prefix="small/").get("KeyCount") == 0, "delete_objects")
try:
    s3.get_object(Bucket=bucket, Key="small/obj.bin")
    check(False, "deleted object still readable")
except s3.exceptions.NoSuchKey:
    pass

# boto3 sends a CRC32 of every upload, over HTTPS as an aws-chunked trailer (a checksum it is
# asked for, such as SHA256, the same way). S3 keeps it with the object and returns it when
# asked (ChecksumMode), and boto3 then validates what it reads; Chmura keeps a small object's
# trailer checksum (sealed) the same way.
crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
r = s3.put_object(Bucket=bucket, Key="ck/default.bin", Body=body)
check(r.get("ChecksumCRC32") == crc, "PUT answer's CRC32: %r" % r.get("ChecksumCRC32"))
h = s3.head_object(Bucket=bucket, Key="ck/default.bin", ChecksumMode="ENABLED")
check(h.get("ChecksumCRC32") == crc, "HEAD's CRC32 of a trailer-checksummed PUT: %r" % h.get("ChecksumCRC32"))
check("ChecksumCRC32" not in s3.head_object(Bucket=bucket, Key="ck/default.bin"), "CRC32 without ChecksumMode")
g = s3.get_object(Bucket=bucket, Key="ck/default.bin", ChecksumMode="ENABLED")
check(g.get("ChecksumCRC32") == crc, "GET's CRC32: %r" % g.get("ChecksumCRC32"))
check(g["Body"].read() == body, "GET validated by its CRC32")
g = s3.get_object(Bucket=bucket, Key="ck/default.bin", Range="bytes=10-99", ChecksumMode="ENABLED")
check("ChecksumCRC32" not in g and g["Body"].read() == body[10:100], "a range states no whole-object CRC32")
sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
r = s3.put_object(Bucket=bucket, Key="ck/sha.bin", Body=body, ChecksumAlgorithm="SHA256")
check(r.get("ChecksumSHA256") == sha, "PUT answer's SHA256")
h = s3.head_object(Bucket=bucket, Key="ck/sha.bin", ChecksumMode="ENABLED")
check(h.get("ChecksumSHA256") == sha, "HEAD's SHA256: %r" % h.get("ChecksumSHA256"))
check(s3.get_object(Bucket=bucket, Key="ck/sha.bin", ChecksumMode="ENABLED")["Body"].read() == body, "GET validated by its SHA256")
r = s3.put_object(Bucket=bucket, Key="ck/empty.bin", Body=b"")
h = s3.head_object(Bucket=bucket, Key="ck/empty.bin", ChecksumMode="ENABLED")
check(h.get("ChecksumCRC32") == "AAAAAA==" and h["ContentLength"] == 0, "empty object's CRC32: %r" % h.get("ChecksumCRC32"))
s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "ck/" + k} for k in ("default.bin", "sha.bin", "empty.bin")]})
print("boto3 suite OK")
