"""pyarrow's S3 file system (the AWS SDK for C++ underneath; pandas and pyarrow users read and
write Parquet on S3 through it) through Chmura, default settings but for the endpoint, the
credentials and the test CA.

Usage: pyarrow_suite.py ENDPOINT BUCKET (the CA file in SSL_CERT_FILE)
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import os
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from steps import check, finish, step  # tests/clients/steps.py

endpoint, b = sys.argv[1:3]
ca = os.environ["SSL_CERT_FILE"]
scheme, host = endpoint.split("://", 1)
fs = pafs.S3FileSystem(
    access_key=os.environ["AWS_ACCESS_KEY_ID"],
    secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    region="us-east-1",
    endpoint_override=host,
    scheme=scheme,
    tls_ca_file_path=ca,
)
MIB = 1024 * 1024
big = os.urandom(23 * MIB + 4321)
small = b"pyarrow " * 1000


def read_all(path):
    with fs.open_input_stream(path) as f:
        return f.read()


@step("small object: write, size, read")
def _():
    with fs.open_output_stream(f"{b}/small.bin") as f:
        f.write(small)
    check(fs.get_file_info(f"{b}/small.bin").size == len(small), "size")
    check(read_all(f"{b}/small.bin") == small, "content")


@step("large object written 1 MiB at a time (a multipart upload), read whole and at random offsets")
def _():
    with fs.open_output_stream(f"{b}/big.bin") as f:
        for i in range(0, len(big), MIB):
            f.write(big[i : i + MIB])
    check(fs.get_file_info(f"{b}/big.bin").size == len(big), "size")
    check(read_all(f"{b}/big.bin") == big, "content")
    with fs.open_input_file(f"{b}/big.bin") as f:
        for off, n in [(0, 10), (5 * MIB - 7, 14), (10 * MIB - 1, 3 * MIB), (len(big) - 5, 5), (123457, 999)]:
            check(f.read_at(n, off) == big[off : off + n], f"read_at({n}, {off})")
        f.seek(len(big) - 100)
        check(f.read() == big[-100:], "tail after seek")


@step("Parquet: write a table, read it back, read one column (footer and column ranges)")
def _():
    n = 300_000
    t = pa.table({"id": pa.array(range(n), pa.int64()), "name": [f"row-{i}" for i in range(n)]})
    pq.write_table(t, f"{b}/data/t.parquet", filesystem=fs, row_group_size=50_000)
    back = pq.read_table(f"{b}/data/t.parquet", filesystem=fs)
    check(back.equals(t), "whole table")
    col = pq.read_table(f"{b}/data/t.parquet", filesystem=fs, columns=["name"])
    check(col.num_rows == n and col.column("name")[12345].as_py() == "row-12345", "one column")
    meta = pq.read_metadata(f"{b}/data/t.parquet", filesystem=fs)
    check(meta.num_row_groups == 6, f"row groups {meta.num_row_groups}")


@step("listing: plaintext sizes, directories")
def _():
    infos = fs.get_file_info(pafs.FileSelector(b, recursive=True))
    sizes = {i.path: i.size for i in infos if i.type == pafs.FileType.File}
    check(sizes.get(f"{b}/big.bin") == len(big) and sizes.get(f"{b}/small.bin") == len(small), f"sizes {sizes}")
    dirs = [i.path for i in infos if i.type == pafs.FileType.Directory]
    check(f"{b}/data" in dirs, f"dirs {dirs}")
    top = fs.get_file_info(pafs.FileSelector(b, recursive=False))
    check(sorted(i.base_name for i in top) == ["big.bin", "data", "small.bin"], "top level")


@step("copy and move (CopyObject, then delete)")
def _():
    fs.copy_file(f"{b}/big.bin", f"{b}/copy.bin")
    check(read_all(f"{b}/copy.bin") == big, "copy content")
    fs.move(f"{b}/copy.bin", f"{b}/moved.bin")
    check(fs.get_file_info(f"{b}/copy.bin").type == pafs.FileType.NotFound, "source gone")
    check(fs.get_file_info(f"{b}/moved.bin").size == len(big), "moved size")


@step("delete a file and a directory's contents")
def _():
    fs.delete_file(f"{b}/moved.bin")
    check(fs.get_file_info(f"{b}/moved.bin").type == pafs.FileType.NotFound, "file gone")
    fs.delete_dir_contents(f"{b}/data")
    left = fs.get_file_info(pafs.FileSelector(f"{b}/data", recursive=True, allow_not_found=True))
    check(left == [], f"left {left}")


@step("a missing object is FileNotFound")
def _():
    try:
        read_all(f"{b}/missing.bin")
        check(False, "read succeeded")
    except FileNotFoundError:
        pass


finish("pyarrow")
