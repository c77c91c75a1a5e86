"""minio-py through Chmura, default client settings (only endpoint, CA and credentials given).

Usage: minio_suite.py HOST:PORT CA_FILE BUCKET WORKDIR
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import datetime
import io
import os
import sys

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, ComposeSource, CopySource, Tags
from minio.datatypes import PostPolicy
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.sse import SseCustomerKey
from minio.versioningconfig import ENABLED, VersioningConfig

from steps import finish, step  # tests/clients/steps.py

host, ca, b, work = sys.argv[1:5]
http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca)
c = Minio(
    host,
    access_key=os.environ["AWS_ACCESS_KEY_ID"],
    secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    secure=True,
    http_client=http,
    region="us-east-1",
)


def read(name, **kw):
    r = c.get_object(b, name, **kw)
    try:
        return r.read()
    finally:
        r.close()
        r.release_conn()


data = os.urandom(3 * 1024 * 1024 + 7)
big = os.urandom(17 * 1024 * 1024 + 3)


@step("make_bucket, bucket_exists")
def _():
    c.make_bucket(b)
    assert c.bucket_exists(b)


@step("put_object with metadata, get_object, ranged get, stat_object")
def _():
    c.put_object(b, "small.bin", io.BytesIO(data), len(data), metadata={"x-amz-meta-color": "blue"})
    assert read("small.bin") == data
    assert read("small.bin", offset=1000, length=5000) == data[1000:6000]
    s = c.stat_object(b, "small.bin")
    assert s.size == len(data), s.size
    assert s.metadata.get("x-amz-meta-color") == "blue", dict(s.metadata)


@step("put_object of unknown length (multipart, 5 MiB parts)")
def _():
    c.put_object(b, "big.bin", io.BytesIO(big), -1, part_size=5 * 1024 * 1024)
    assert read("big.bin") == big
    assert read("big.bin", offset=5 * 1024 * 1024 - 10, length=20) == big[5 * 1024 * 1024 - 10 : 5 * 1024 * 1024 + 10]


@step("fput_object, fget_object")
def _():
    src, dst = os.path.join(work, "f.bin"), os.path.join(work, "f2.bin")
    with open(src, "wb") as f:
        f.write(big)
    c.fput_object(b, "f.bin", src, part_size=5 * 1024 * 1024)
    c.fget_object(b, "f.bin", dst)
    with open(dst, "rb") as f:
        assert f.read() == big


@step("copy_object (COPY and REPLACE), compose_object (UploadPartCopy)")
def _():
    c.copy_object(b, "copy.bin", CopySource(b, "small.bin"))
    assert read("copy.bin") == data
    c.copy_object(b, "copy2.bin", CopySource(b, "small.bin"), metadata={"x-amz-meta-k": "v"}, metadata_directive=REPLACE)
    assert c.stat_object(b, "copy2.bin").metadata.get("x-amz-meta-k") == "v"
    c.compose_object(b, "composed.bin", [ComposeSource(b, "big.bin"), ComposeSource(b, "small.bin")])
    assert read("composed.bin") == big + data


@step("list_objects v2 and v1, recursive (an empty delimiter) and by folder")
def _():
    c.put_object(b, "dir/sub/x.txt", io.BytesIO(b"x"), 1)
    sizes = {o.object_name: o.size for o in c.list_objects(b, recursive=True)}
    assert sizes.get("small.bin") == len(data) and sizes.get("dir/sub/x.txt") == 1, sizes
    v1 = {o.object_name for o in c.list_objects(b, recursive=True, use_api_v1=True)}
    assert set(sizes) == v1, (sorted(sizes), sorted(v1))
    top = {o.object_name for o in c.list_objects(b)}
    assert "dir/" in top and "dir/sub/x.txt" not in top, top


@step("object tags")
def _():
    t = Tags.new_object_tags()
    t["a"] = "1"
    c.set_object_tags(b, "small.bin", t)
    assert dict(c.get_object_tags(b, "small.bin")) == {"a": "1"}
    c.delete_object_tags(b, "small.bin")


@step("presigned GET, PUT and POST")
def _():
    url = c.presigned_get_object(b, "small.bin", expires=datetime.timedelta(minutes=5))
    r = http.request("GET", url)
    assert r.status == 200 and r.data == data, r.status
    url = c.presigned_put_object(b, "pp.bin", expires=datetime.timedelta(minutes=5))
    r = http.request("PUT", url, body=b"hello presigned")
    assert r.status == 200, (r.status, r.data)
    assert read("pp.bin") == b"hello presigned"
    p = PostPolicy(b, datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
    p.add_starts_with_condition("key", "post/")
    fields = dict(c.presigned_post_policy(p))
    fields["key"] = "post/x.txt"
    r = http.request("POST", f"https://{host}/{b}", fields={**fields, "file": ("x.txt", b"posted")})
    assert r.status in (200, 204), (r.status, r.data[:300])
    assert read("post/x.txt") == b"posted"


@step("remove_objects, remove_object, stat of a missing key")
def _():
    errs = list(c.remove_objects(b, [DeleteObject("copy.bin"), DeleteObject("copy2.bin")]))
    assert not errs, errs
    c.remove_object(b, "pp.bin")
    try:
        c.stat_object(b, "copy.bin")
    except Exception as e:  # noqa: BLE001
        assert "NoSuchKey" in str(e) or "Not Found" in str(e), str(e)
    else:
        raise AssertionError("a removed object still answers")


@step("SSE-C: put (single and multipart), stat, get, ranged get, copy to another key; refused without it")
def _():
    k1, k2 = SseCustomerKey(os.urandom(32)), SseCustomerKey(os.urandom(32))
    c.put_object(b, "ssec.bin", io.BytesIO(data), len(data), sse=k1)
    assert read("ssec.bin", ssec=k1) == data
    assert read("ssec.bin", ssec=k1, offset=70000, length=100) == data[70000:70100]
    assert c.stat_object(b, "ssec.bin", ssec=k1).size == len(data)
    try:
        read("ssec.bin")
    except S3Error as e:
        assert e.code == "InvalidRequest", e.code
    else:
        raise AssertionError("an SSE-C object was read without its key")
    c.put_object(b, "ssec-big.bin", io.BytesIO(big), -1, part_size=5 * 1024 * 1024, sse=k1)
    assert read("ssec-big.bin", ssec=k1) == big
    c.copy_object(b, "ssec-copy.bin", CopySource(b, "ssec.bin", ssec=k1), sse=k2)
    assert read("ssec-copy.bin", ssec=k2) == data


@step("versioning: versions read back by id, listed with plaintext sizes")
def _():
    c.set_bucket_versioning(b, VersioningConfig(ENABLED))
    r1 = c.put_object(b, "v.txt", io.BytesIO(b"one"), 3)
    c.put_object(b, "v.txt", io.BytesIO(b"two!"), 4)
    assert read("v.txt", version_id=r1.version_id) == b"one"
    vs = list(c.list_objects(b, prefix="v.txt", include_version=True))
    assert sorted(x.size for x in vs) == [3, 4], [(x.version_id, x.size) for x in vs]


finish("minio")
