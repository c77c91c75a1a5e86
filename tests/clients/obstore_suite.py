"""obstore (Python bindings of the Rust object_store crate, which polars and DataFusion use)
through Chmura, default settings (endpoint, credentials and, through SSL_CERT_FILE, the CA).

Usage: obstore_suite.py ENDPOINT BUCKET
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import io
import os
import sys

import obstore as obs
from obstore.store import S3Store

from steps import check, finish, step  # tests/clients/steps.py

endpoint, b = sys.argv[1:3]
store = S3Store(
    b,
    endpoint=endpoint,
    access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    region="us-east-1",
    virtual_hosted_style_request=False,
)
MIB5 = 5 * 1024 * 1024
big = os.urandom(12 * 1024 * 1024 + 777)
small = b"hello" * 1000


@step("put / get / head of a small object")
def _():
    obs.put(store, "small", small)
    check(bytes(obs.get(store, "small").bytes()) == small, "content")
    check(obs.head(store, "small")["size"] == len(small), "head size")


@step("get_range / get_ranges (one request per range)")
def _():
    obs.put(store, "big", big)
    check(bytes(obs.get_range(store, "big", start=100, end=70000)) == big[100:70000], "range")
    got = obs.get_ranges(store, "big", starts=[0, MIB5 - 3, len(big) - 9], ends=[10, MIB5 + 3, len(big)])
    check([bytes(x) for x in got] == [big[0:10], big[MIB5 - 3 : MIB5 + 3], big[-9:]], "ranges")


@step("put of a stream: a multipart upload in 5 MiB parts")
def _():
    obs.put(store, "mp", io.BytesIO(big), chunk_size=MIB5)
    check(obs.head(store, "mp")["size"] == len(big), "head size")
    check(bytes(obs.get(store, "mp").bytes()) == big, "content")
    check(bytes(obs.get_range(store, "mp", start=MIB5 - 5, end=2 * MIB5 + 5)) == big[MIB5 - 5 : 2 * MIB5 + 5], "range across parts")


@step("list shows plaintext sizes; list_with_delimiter")
def _():
    obs.put(store, "d/x", b"x")
    sizes = {i["path"]: i["size"] for batch in obs.list(store) for i in batch}
    check(sizes.get("big") == len(big) and sizes.get("mp") == len(big) and sizes.get("small") == len(small), f"sizes {sizes}")
    r = obs.list_with_delimiter(store)
    check(r["common_prefixes"] == ["d"], f"prefixes {r['common_prefixes']}")
    check(sorted(o["path"] for o in r["objects"]) == ["big", "mp", "small"], "objects")


@step("put mode=create: a new key is written, an existing one refused (If-None-Match: *)")
def _():
    obs.put(store, "created", b"c", mode="create")
    try:
        obs.put(store, "small", b"other", mode="create")
    except Exception as e:  # noqa: BLE001
        check("AlreadyExists" in type(e).__name__, f"wrong error {type(e).__name__}")
    else:
        raise AssertionError("an existing key was overwritten")
    check(bytes(obs.get(store, "small").bytes()) == small, "existing object changed")


@step("put mode=update: the current ETag writes, a stale one is refused (If-Match)")
def _():
    stale = obs.head(store, "small")["e_tag"]
    obs.put(store, "small", b"v2", mode={"e_tag": stale})
    check(bytes(obs.get(store, "small").bytes()) == b"v2", "update")
    try:
        obs.put(store, "small", b"v3", mode={"e_tag": stale})
    except Exception as e:  # noqa: BLE001
        check("Precondition" in type(e).__name__, f"wrong error {type(e).__name__}")
    else:
        raise AssertionError("a stale ETag overwrote the object")
    check(bytes(obs.get(store, "small").bytes()) == b"v2", "object changed")


@step("get with if_none_match / if_match")
def _():
    tag = obs.head(store, "small")["e_tag"]
    try:
        obs.get(store, "small", options={"if_none_match": tag})
    except Exception as e:  # noqa: BLE001
        check("NotModified" in type(e).__name__, f"wrong error {type(e).__name__}")
    else:
        raise AssertionError("no 304")
    check(bytes(obs.get(store, "small", options={"if_match": tag}).bytes()) == b"v2", "if_match")


@step("copy and rename")
def _():
    obs.copy(store, "mp", "copied")
    check(bytes(obs.get(store, "copied").bytes()) == big, "copy")
    obs.rename(store, "copied", "renamed")
    check(bytes(obs.get(store, "renamed").bytes()) == big, "rename")


@step("delete a batch; a missing key is FileNotFoundError")
def _():
    obs.delete(store, ["renamed", "created", "d/x"])
    try:
        obs.get(store, "renamed")
    except FileNotFoundError:
        return
    raise AssertionError("deleted object still readable")


finish("obstore")
