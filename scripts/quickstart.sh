#!/usr/bin/env bash
# Starts Chmura in front of a local S3 store (s3s-fs, started here too) and prints an aws
# command to try it. Ctrl-C stops both. State lives in .chmura-dev/ (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.chmura-dev"
cargo build --release -q --bin chmura --bin chmura-dev-store
./target/release/chmura-dev-store --dir "$DIR" --port 9000 &
STORE=$!
trap 'kill $STORE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break
  sleep 0.1
done
./target/release/chmura check-config "$DIR/chmura.toml"
cat <<MSG

Chmura is starting on https://localhost:8443 (TLS, test CA in $DIR/ca.pem),
proxying to the local store on http://127.0.0.1:9000. Try, in another shell:

  AWS_ACCESS_KEY_ID=$(grep access_key_id "$DIR/chmura.toml" | tail -1 | cut -d'"' -f2) \\
  AWS_SECRET_ACCESS_KEY=\$(cat "$DIR/tenant.secret") AWS_DEFAULT_REGION=us-east-1 \\
  aws --endpoint-url https://localhost:8443 --ca-bundle "$DIR/ca.pem" s3 mb s3://demo
  # then: aws ... s3 cp ./some-file s3://demo/   and   aws ... s3 ls s3://demo/
  # (objects are encrypted in the store; large files go up as encrypted multipart uploads)

(aws cli: scripts/install-tools.sh puts one in .tools/venv/bin/aws.)
MSG
./target/release/chmura serve --config "$DIR/chmura.toml"
