#!/usr/bin/env bash
# Installs the real S3 clients and servers the test suite drives, into .tools/ (idempotent):
#   - a Python venv with boto3, aws cli (v1), s3cmd, minio-py and moto_server (S3 + KMS, checks no signatures)
#   - a second venv with fsspec's s3fs (aiobotocore pins its own botocore), obstore (object_store)
#     pyarrow (its S3 file system is the AWS SDK for C++), DuckDB with its httpfs extension and
#     Apache OpenDAL
#   - rclone, s3fs-fuse, restic and the aws cli v2 (Debian packages; the s3fs test also needs /dev/fuse)
#   - the AWS SDK for Ruby (Debian's ruby-aws-sdk-s3)
#   - the AWS SDKs for Go v1 and v2 (Debian's source packages; the tests build
#     tests/clients/go_v1_suite.go and go_v2_suite.go)
#   - minio-py's functional test suite (from minio's sdist on PyPI)
#   - minio-go's functional test suite (the one MinIO's Mint runs), built with Debian's Go from
#     Debian's minio-go v7 source package
# Nothing is assumed to be on the machine beyond python3 and apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${CHMURA_TOOLS_DIR:-$PWD/.tools}"
VENV="$TOOLS/venv"
STAMP="$TOOLS/.installed-v12"
FSSPEC_VENV="$TOOLS/venv-fsspec"
mkdir -p "$TOOLS/bin"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/aws" ] && [ -x "$VENV/bin/moto_server" ] && [ -x "$FSSPEC_VENV/bin/python" ] && command -v rclone >/dev/null \
  && command -v s3fs >/dev/null && command -v restic >/dev/null && [ -x /usr/bin/aws ] && [ -d "$TOOLS/node/node_modules/@aws-sdk/lib-storage" ] \
  && [ -d "$TOOLS/node/node_modules/minio" ] && [ -x "$TOOLS/bin/minio-go-functional" ] \
  && ruby -e 'require "aws-sdk-s3"' 2>/dev/null && [ -d /usr/share/gocode/src/github.com/aws/aws-sdk-go/service/s3 ] \
  && [ -d /usr/share/gocode/src/github.com/aws/aws-sdk-go-v2/service/s3 ] && [ -f "$TOOLS/minio-py-functional/tests.py" ]; then
  echo "tools already installed in $TOOLS"
  exit 0
fi

missing=""
command -v rclone >/dev/null || missing="$missing rclone"
command -v s3fs >/dev/null || missing="$missing s3fs"
command -v restic >/dev/null || missing="$missing restic"
[ -x /usr/bin/aws ] || missing="$missing awscli"
ruby -e 'require "aws-sdk-s3"' 2>/dev/null || missing="$missing ruby-aws-sdk-s3"
GOCODE=/usr/share/gocode/src/github.com
command -v go >/dev/null || missing="$missing golang-go"
for pkg in minio/minio-go/v7:golang-github-minio-minio-go-v7-dev aws/aws-sdk-go:golang-github-aws-aws-sdk-go-dev \
  aws/aws-sdk-go-v2:golang-github-aws-aws-sdk-go-v2-dev \
  dustin/go-humanize:golang-github-dustin-go-humanize-dev \
  json-iterator/go:golang-github-json-iterator-go-dev minio/sha256-simd:golang-github-minio-sha256-simd-dev \
  sirupsen/logrus:golang-github-sirupsen-logrus-dev; do
  [ -d "$GOCODE/${pkg%%:*}" ] || missing="$missing ${pkg#*:}"
done
if [ -n "$missing" ]; then
  echo "installing$missing (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
fi

# minio-go's functional tests are `package main` behind the `mint` build tag, beside the
# library: copied out without the tag (the tag would pull the file into the library too) and
# built alone, in GOPATH mode, against Debian's sources (no module download).
if [ ! -x "$TOOLS/bin/minio-go-functional" ]; then
  mkdir -p "$TOOLS/go/src/minio-go-functional"
  grep -v '^// *+build mint$\|^//go:build mint$' "$GOCODE/minio/minio-go/v7/functional_tests.go" \
    > "$TOOLS/go/src/minio-go-functional/main.go"
  (cd "$TOOLS/go/src/minio-go-functional" && GO111MODULE=off GOPATH="$TOOLS/go:/usr/share/gocode" \
    GOCACHE="$TOOLS/go/cache" GOFLAGS= go build -o "$TOOLS/bin/minio-go-functional" .)
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check \
  "boto3>=1.40" "awscli>=1.38" "s3cmd==2.4.0" "moto[s3]==5.2.5" "minio==7.2.20" flask flask-cors pyotp
# minio-py's functional test suite (the one MinIO's Mint runs), from minio's sdist on PyPI.
MINIO_PY_SUITE="$TOOLS/minio-py-functional/tests.py"
if [ ! -f "$MINIO_PY_SUITE" ]; then
  sdist="$(mktemp -d)"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$sdist" "minio==7.2.20"
  tar -xzf "$sdist/minio-7.2.20.tar.gz" -C "$sdist"
  mkdir -p "$TOOLS/minio-py-functional"
  cp "$sdist/minio-7.2.20/tests/functional/tests.py" "$MINIO_PY_SUITE"
  rm -rf "$sdist"
fi
if [ ! -x "$FSSPEC_VENV/bin/python" ]; then
  python3 -m venv "$FSSPEC_VENV"
fi
"$FSSPEC_VENV/bin/pip" install -q --disable-pip-version-check "s3fs==2026.9.0" "obstore==0.12.1" "pyarrow==26.0.1" \
  "duckdb==1.4.4" "duckdb-ext-httpfs==1.4.4.20260205" "opendal==0.47.12"
# The JS SDK v3 (npm), for its aws-chunked uploads and lib-storage multipart, and MinIO's JS client.
if command -v npm >/dev/null; then
  mkdir -p "$TOOLS/node"
  (cd "$TOOLS/node" && [ -f package.json ] || echo '{"name":"chmura-test-tools","private":true}' > package.json)
  (cd "$TOOLS/node" && npm install --silent --no-audit --no-fund @aws-sdk/client-s3@3 @aws-sdk/lib-storage@3 minio@8.0.7 >/dev/null)
else
  echo "npm not found: the JS SDK tests will fail under CHMURA_REQUIRE_TOOLS=1" >&2
fi
touch "$STAMP"
echo "tools installed in $TOOLS:"
"$VENV/bin/python" -c 'import boto3, botocore; print("  boto3", boto3.__version__, "botocore", botocore.__version__)'
"$VENV/bin/aws" --version 2>&1 | sed 's/^/  /' || true
"$VENV/bin/s3cmd" --version 2>&1 | sed 's/^/  /' || true
rclone version 2>/dev/null | sed -n '1s/^/  /p' || true
s3fs --version 2>/dev/null | sed -n '1s/^/  /p' || true
restic version 2>/dev/null | sed 's/^/  /' || true
/usr/bin/aws --version 2>/dev/null | sed 's/^/  /' || true
"$FSSPEC_VENV/bin/python" -c 'import s3fs, aiobotocore, obstore, pyarrow, duckdb; print("  fsspec s3fs", s3fs.__version__, "aiobotocore", aiobotocore.__version__, "obstore", obstore.__version__, "pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__)' || true
if [ -d "$TOOLS/node/node_modules/@aws-sdk/client-s3" ]; then echo "  @aws-sdk/client-s3 $(node -p "require('$TOOLS/node/node_modules/@aws-sdk/client-s3/package.json').version")"; fi
ruby -e 'require "aws-sdk-s3"; puts "  aws-sdk-s3 (Ruby) #{Aws::S3::GEM_VERSION}, aws-sdk-core #{Aws::CORE_GEM_VERSION}"' 2>/dev/null || true
echo "  minio-go functional tests $(dpkg-query -W -f='${Version}' golang-github-minio-minio-go-v7-dev 2>/dev/null), $(go version 2>/dev/null)"
if [ -d "$TOOLS/node/node_modules/minio" ]; then echo "  minio (JS) $(node -p "require('$TOOLS/node/node_modules/minio/package.json').version")"; fi
