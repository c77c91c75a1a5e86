#!/usr/bin/env bash
# Starts Chmura in front of a local S3 store (started here too) and prints an aws command to
# try it. Ctrl-C stops both. Chmura's state (test CA, secrets, keyring, config) lives in
# .chmura-dev/ (delete it to start over).
#
#   bash scripts/quickstart.sh              # the store is moto_server (pip, into .chmura-dev/venv):
#                                           # versioning, tagging, bucket policies, ACLs, lifecycle,
#                                           # Object Lock, CORS, ListMultipartUploads; kept in memory
#   bash scripts/quickstart.sh --store fs   # the store is s3s-fs on disk (.chmura-dev/store): kept
#                                           # across restarts, faster, checks signatures; plain
#                                           # object and multipart operations only
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.chmura-dev"
STORE_KIND=moto
while [ $# -gt 0 ]; do
  case "$1" in
    --store) STORE_KIND="${2:-}"; shift 2 ;;
    --store=*) STORE_KIND="${1#--store=}"; shift ;;
    *) echo "usage: $0 [--store moto|fs]" >&2; exit 2 ;;
  esac
done
case "$STORE_KIND" in moto|fs) ;; *) echo "--store takes moto or fs" >&2; exit 2 ;; esac
cargo build --release -q --bin chmura --bin chmura-dev-store
# Both stores listen on 127.0.0.1:9000, so one chmura.toml serves either.
./target/release/chmura-dev-store --dir "$DIR" --port 9000 --write-config
VENV="$DIR/venv"
if [ "$STORE_KIND" = moto ] && [ ! -x "$VENV/bin/moto_server" ]; then
  echo "installing moto_server into $VENV (once)"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check \
      "moto[s3]==5.2.5" flask flask-cors; }; then
    rm -rf "$VENV"
    echo "could not install moto_server (python3-venv missing, or no package index?);" \
      "starting the s3s-fs store instead (--store fs)" >&2
    STORE_KIND=fs
  fi
fi
if [ "$STORE_KIND" = moto ]; then
  "$VENV/bin/moto_server" -H 127.0.0.1 -p 9000 > "$DIR/moto.log" 2>&1 &
  STORE_DESC="moto_server (in memory; log in $DIR/moto.log)"
else
  ./target/release/chmura-dev-store --dir "$DIR" --port 9000 &
  STORE_DESC="s3s-fs (on disk in $DIR/store)"
fi
STORE=$!
trap 'kill $STORE 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break
  kill -0 $STORE 2>/dev/null || { echo "the store did not start" >&2; exit 1; }
  sleep 0.1
done
./target/release/chmura check-config "$DIR/chmura.toml"
cat <<MSG

Chmura is starting on https://localhost:8443 (TLS, test CA in $DIR/ca.pem),
proxying to $STORE_DESC on http://127.0.0.1:9000. Try, in another shell:

  AWS_ACCESS_KEY_ID=$(grep access_key_id "$DIR/chmura.toml" | tail -1 | cut -d'"' -f2) \\
  AWS_SECRET_ACCESS_KEY=\$(cat "$DIR/tenant.secret") AWS_DEFAULT_REGION=us-east-1 \\
  aws --endpoint-url https://localhost:8443 --ca-bundle "$DIR/ca.pem" s3 mb s3://demo
  # then: aws ... s3 cp ./some-file s3://demo/   and   aws ... s3 ls s3://demo/
  # (objects are encrypted in the store; large files go up as encrypted multipart uploads)

(aws cli: scripts/install-tools.sh puts one in .tools/venv/bin/aws.)
MSG
./target/release/chmura serve --config "$DIR/chmura.toml"
