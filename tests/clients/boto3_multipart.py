"""boto3 multipart transfers through Chmura (run by tests/integration/clients.rs).

Usage: boto3_multipart.py ENDPOINT CA_FILE BUCKET WORKDIR
upload_file and download_file with TransferConfig(max_concurrency=10): parallel parts up,
parallel ranged GETs down. Prints "boto3 multipart OK" when every check passed.
"""
import hashlib
import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, ca, bucket, work = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    verify=ca,
    region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=Config(s3={"addressing_style": "path"}),
)
cfg = TransferConfig(max_concurrency=10)
src = os.path.join(work, "mp-src.bin")
size = 40 * 1024 * 1024 + 4321
with open(src, "wb") as f:
    block = hashlib.sha256(b"chmura").digest() * 4096
    written = 0
    while written < size:
        n = min(len(block), size - written)
        f.write(block[:n])
        written += n
        block = hashlib.sha256(block).digest() * 4096
s3.upload_file(src, bucket, "boto3/mp.bin", Config=cfg)
head = s3.head_object(Bucket=bucket, Key="boto3/mp.bin")
assert head["ContentLength"] == size, head["ContentLength"]
assert head["ETag"].endswith('-6"'), head["ETag"]
dst = os.path.join(work, "mp-dst.bin")
s3.download_file(bucket, "boto3/mp.bin", dst, Config=cfg)
with open(src, "rb") as a, open(dst, "rb") as b:
    assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), "round trip"
print("boto3 multipart OK")
