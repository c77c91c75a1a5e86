"""fsspec's s3fs (aiobotocore) through Chmura, default settings (endpoint, CA and credentials given).

Usage: fsspec_suite.py ENDPOINT CA_FILE BUCKET WORKDIR
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import hashlib
import os
import sys

import s3fs

from steps import check, finish, step  # tests/clients/steps.py

endpoint, ca, b, work = sys.argv[1:5]
fs = s3fs.S3FileSystem(
    key=os.environ["AWS_ACCESS_KEY_ID"],
    secret=os.environ["AWS_SECRET_ACCESS_KEY"],
    client_kwargs={"endpoint_url": endpoint, "verify": ca},
)
# Not multiples of the 64 KiB chunk, nor of the 5 MiB block s3fs writes parts in.
big = os.urandom(12 * 1024 * 1024 + 12345)
small = b"hello, encrypted world\n" * 100


@step("mkdir (CreateBucket)")
def _():
    fs.mkdir(b)
    check(fs.exists(b), "bucket missing")


@step("pipe / cat / info of a small object")
def _():
    fs.pipe(f"{b}/small.txt", small)
    fs.invalidate_cache()
    check(fs.cat(f"{b}/small.txt") == small, "content differs")
    info = fs.info(f"{b}/small.txt")
    check(info["size"] == len(small), f"size {info['size']} != {len(small)}")


@step("open('wb') in 5 MiB blocks: a multipart upload")
def _():
    with fs.open(f"{b}/big.bin", "wb", block_size=5 * 1024 * 1024) as f:
        for i in range(0, len(big), 1 << 20):
            f.write(big[i : i + (1 << 20)])
    fs.invalidate_cache()
    check(fs.info(f"{b}/big.bin")["size"] == len(big), "size after multipart")


@step("cat_file ranges, including across part boundaries and the tail")
def _():
    p = f"{b}/big.bin"
    mib5 = 5 * 1024 * 1024
    for start, end in [(0, 1), (mib5 - 100, mib5 + 100), (2 * mib5 - 7, 2 * mib5 + 70000), (len(big) - 10, len(big))]:
        got = fs.cat_file(p, start=start, end=end)
        check(got == big[start:end], f"range {start}-{end}")
    check(fs.cat_file(p, start=-5) == big[-5:], "suffix range")


@step("open('rb') with seeks (read-ahead cache, ranged GETs)")
def _():
    with fs.open(f"{b}/big.bin", "rb", block_size=1 << 20) as f:
        f.seek(3 * 1024 * 1024 + 17)
        check(f.read(100000) == big[3 * 1024 * 1024 + 17 : 3 * 1024 * 1024 + 17 + 100000], "seek read")
        f.seek(len(big) - 1000)
        check(f.read() == big[-1000:], "read to end")


@step("get to a local file")
def _():
    local = os.path.join(work, "big.out")
    fs.get(f"{b}/big.bin", local)
    with open(local, "rb") as f:
        check(hashlib.sha256(f.read()).digest() == hashlib.sha256(big).digest(), "downloaded bytes differ")


@step("put of a local file")
def _():
    local = os.path.join(work, "up.bin")
    with open(local, "wb") as f:
        f.write(big[:3000000])
    fs.put(local, f"{b}/up.bin")
    check(fs.cat(f"{b}/up.bin") == big[:3000000], "put content")


@step("ls / find / du show plaintext sizes")
def _():
    fs.invalidate_cache()
    sizes = {os.path.basename(e["name"]): e["size"] for e in fs.ls(b, detail=True) if e["type"] == "file"}
    check(sizes.get("big.bin") == len(big), f"ls size {sizes}")
    check(sizes.get("small.txt") == len(small), f"ls size {sizes}")
    found = fs.find(b, detail=True)
    check(found[f"{b}/up.bin"]["size"] == 3000000, "find size")
    check(fs.du(b) == len(big) + len(small) + 3000000, f"du {fs.du(b)}")


@step("pseudo-directories: exists / isdir / ls of a prefix")
def _():
    fs.pipe(f"{b}/dir/sub/a.txt", b"a")
    fs.pipe(f"{b}/dir/b.txt", b"bb")
    fs.invalidate_cache()
    check(fs.isdir(f"{b}/dir"), "isdir")
    check(fs.exists(f"{b}/dir/sub/a.txt"), "exists")
    check(not fs.exists(f"{b}/dir/nope"), "missing key exists")
    names = sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(f"{b}/dir"))
    check(names == ["b.txt", "sub"], f"ls dir {names}")


@step("copy (CopyObject) and the copy reads back")
def _():
    fs.copy(f"{b}/small.txt", f"{b}/copy.txt")
    check(fs.cat(f"{b}/copy.txt") == small, "copy content")


@step("metadata: setxattr / getxattr (CopyObject REPLACE)")
def _():
    fs.setxattr(f"{b}/copy.txt", color="blue")
    fs.invalidate_cache()
    check(fs.getxattr(f"{b}/copy.txt", "color") == "blue", "xattr")
    check(fs.cat(f"{b}/copy.txt") == small, "content after metadata replace")


@step("tags: put_tags / get_tags")
def _():
    fs.put_tags(f"{b}/small.txt", {"k": "v"})
    check(fs.get_tags(f"{b}/small.txt") == {"k": "v"}, "tags")


@step("touch an empty object, read it back")
def _():
    fs.touch(f"{b}/empty")
    fs.invalidate_cache()
    check(fs.cat(f"{b}/empty") == b"", "empty")
    check(fs.info(f"{b}/empty")["size"] == 0, "empty size")


@step("rm recursive (DeleteObjects) and rm a file")
def _():
    fs.rm(f"{b}/dir", recursive=True)
    fs.rm(f"{b}/copy.txt")
    fs.invalidate_cache()
    check(not fs.exists(f"{b}/dir/b.txt"), "dir not removed")
    check(not fs.exists(f"{b}/copy.txt"), "file not removed")


@step("a missing key is FileNotFoundError")
def _():
    try:
        fs.cat(f"{b}/no-such-key")
    except FileNotFoundError:
        return
    raise AssertionError("no error")


finish("fsspec")
