"""POST Object (browser form uploads) through Chmura, with policies made by boto3's
generate_presigned_post (SigV4 and SigV2) and forms sent as a browser would.

Usage: post_suite.py ENDPOINT CA_FILE BUCKET
Exits non-zero with a message on the first failure; leaves post/s3v4/big.bin in the bucket.
"""
import re
import ssl
import sys
import urllib.error
import urllib.request
import uuid

import boto3
from botocore.client import Config

endpoint, ca, bucket = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, region_name="us-east-1")
ctx = ssl.create_default_context(cafile=ca)


def check(cond, msg):
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)


def post(url, fields, filename, data, extra=None):
    """Sends the form the way browsers do: fields in order, the file last."""
    boundary = "----chmura" + uuid.uuid4().hex
    out = []
    for k, v in list(fields.items()) + list((extra or {}).items()):
        out.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, k, v)).encode())
    out.append(('--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
                'Content-Type: application/octet-stream\r\n\r\n' % (boundary, filename)).encode())
    body = b"".join(out) + data + ("\r\n--%s--\r\n" % boundary).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
    try:
        r = opener.open(req)
        return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def exists(key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


s3.create_bucket(Bucket=bucket)
marker = b"chmura-post-plaintext."
small = marker * 40
big = marker * (3 * 1024 * 1024 // len(marker))  # 3 MiB: streamed, not read whole

for version in ("s3v4", "s3"):
    c = boto3.client("s3", endpoint_url=endpoint, verify=ca, region_name="us-east-1",
                     config=Config(signature_version=version))
    p = c.generate_presigned_post(
        bucket, "post/%s/${filename}" % version,
        Fields={"success_action_status": "201", "x-amz-meta-who": "form", "Content-Type": "text/plain"},
        Conditions=[{"success_action_status": "201"}, {"x-amz-meta-who": "form"},
                    ["starts-with", "$Content-Type", "text/"], ["content-length-range", 1, 8 * 1024 * 1024]],
        ExpiresIn=300)
    for name, data in (("small.bin", small), ("big.bin", big)):
        status, headers, xml = post(p["url"], p["fields"], name, data)
        check(status == 201, "%s %s: status %d %r" % (version, name, status, xml[:300]))
        key = "post/%s/%s" % (version, name)
        check(("<Key>%s</Key>" % key).encode() in xml, "%s PostResponse key %r" % (version, xml))
        etag = re.search(rb"<ETag>(.*)</ETag>", xml).group(1).decode().replace("&quot;", '"')
        got = s3.get_object(Bucket=bucket, Key=key)
        check(got["Body"].read() == data, "%s %s reads back" % (version, name))
        check(got["ETag"] == etag == headers["ETag"], "%s ETag agrees: %s %s" % (version, got["ETag"], etag))
        check(got["Metadata"].get("who") == "form", "%s metadata %r" % (version, got["Metadata"]))
        check(got["ContentType"] == "text/plain", "%s content type %s" % (version, got["ContentType"]))

# Default answer: 204 with ETag and Location.
p = s3.generate_presigned_post(bucket, "post/plain.bin", ExpiresIn=300)
status, headers, body = post(p["url"], p["fields"], "x", small)
check(status == 204 and body == b"", "default status %d" % status)
check(headers.get("ETag") and headers.get("Location"), "204 headers %r" % dict(headers))

# success_action_redirect: 303 to the URL with bucket, key and etag.
to = "https://example.invalid/done"
p = s3.generate_presigned_post(bucket, "post/redirect.bin", Fields={"success_action_redirect": to},
                               Conditions=[{"success_action_redirect": to}], ExpiresIn=300)
status, headers, _ = post(p["url"], p["fields"], "x", small)
loc = headers.get("Location") or ""
check(status == 303 and loc.startswith(to + "?bucket=" + bucket + "&key=post%2Fredirect.bin&etag=%22"),
      "redirect %d %s" % (status, loc))

# Refused, and nothing stored: a policy changed after signing, a file over the range, a field
# the policy does not name, an expired policy.
p = s3.generate_presigned_post(bucket, "post/refused.bin", Conditions=[["content-length-range", 1, 10]],
                               ExpiresIn=300)
import base64
import json
doc = json.loads(base64.b64decode(p["fields"]["policy"]))
doc["conditions"] = [c for c in doc["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")]
forged = dict(p["fields"], policy=base64.b64encode(json.dumps(doc).encode()).decode())
cases = [
    (forged, {}, small, 403, b"SignatureDoesNotMatch"),
    (p["fields"], {}, small, 400, b"EntityTooLarge"),
    (p["fields"], {"x-amz-meta-extra": "1"}, b"tiny", 403, b"Extra input fields"),
]
expired = s3.generate_presigned_post(bucket, "post/refused.bin", ExpiresIn=-10)
cases.append((expired["fields"], {}, b"tiny", 403, b"Policy expired"))
for fields, extra, data, want, text in cases:
    status, _, body = post(p["url"], fields, "x", data, extra)
    check(status == want and text in body, "refusal %s: %d %r" % (text, status, body[:300]))
check(not exists("post/refused.bin"), "a refused POST stored an object")

print("post suite OK")
