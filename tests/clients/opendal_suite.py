"""Apache OpenDAL (its Python binding; the Rust data-access layer Databend, GreptimeDB and
others reach S3 through, with its own signer, reqsign) through Chmura, default settings
(endpoint, bucket, region, credentials and, through SSL_CERT_FILE, the CA).

Usage: opendal_suite.py ENDPOINT BUCKET
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import os
import sys

import opendal

from steps import check, finish, step  # tests/clients/steps.py

endpoint, b = sys.argv[1:3]
op = opendal.Operator(
    "s3",
    bucket=b,
    endpoint=endpoint,
    region="us-east-1",
    access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
)
MIB = 1024 * 1024
small = os.urandom(70001)
big = os.urandom(13 * MIB + 11)


@step("write / read / stat of a small object")
def _():
    op.write("small", small)
    check(bytes(op.read("small")) == small, "content")
    st = op.stat("small")
    check(st.content_length == len(small), f"stat length {st.content_length}")
    check(op.exists("small") and not op.exists("missing"), "exists")


def read_exactly(f, n):
    """A file's read may return less than asked (raw I/O); reads until n bytes or the end."""
    out = b""
    while len(out) < n:
        got = bytes(f.read(n - len(out)))
        if not got:
            break
        out += got
    return out


@step("a streamed write of 13 MiB (multipart) read whole and by seeks")
def _():
    with op.open("big", "wb") as f:
        for i in range(0, len(big), MIB):
            f.write(big[i:i + MIB])
    check(op.stat("big").content_length == len(big), "stat length")
    check(bytes(op.read("big")) == big, "content")
    with op.open("big", "rb") as f:
        f.seek(5 * MIB - 7)
        check(read_exactly(f, 14) == big[5 * MIB - 7:5 * MIB + 7], "a read across a part boundary")
        f.seek(len(big) - 5)
        check(read_exactly(f, 100) == big[-5:], "the tail")


@step("create_dir, list (one level), scan (recursive) in plaintext sizes")
def _():
    op.create_dir("dir/")
    op.write("dir/a", b"a" * 10)
    op.write("dir/sub/b", b"b" * 20)
    names = sorted(e.path for e in op.list("dir/"))
    check(names == ["dir/", "dir/a", "dir/sub/"], f"list {names}")
    everything = sorted(e.path for e in op.scan(""))
    for p in ("big", "dir/a", "dir/sub/b", "small"):
        check(p in everything, f"scan lacks {p}: {everything}")
    check(op.stat("dir/sub/b").content_length == 20, "stat")


@step("copy, delete, remove_all")
def _():
    op.copy("small", "small-copy")
    check(bytes(op.read("small-copy")) == small, "copy content")
    op.delete("small-copy")
    check(not op.exists("small-copy"), "deleted")
    op.remove_all("dir/")
    check(not op.exists("dir/a") and not op.exists("dir/sub/b"), "removed")


@step("a missing object is NotFound")
def _():
    try:
        op.read("missing")
        check(False, "read a missing object")
    except opendal.exceptions.NotFound:
        pass


finish("opendal")
