# The AWS SDK for Ruby (aws-sdk-s3, Debian's ruby-aws-sdk-s3) through Chmura, default
# settings but for the endpoint, path-style addressing, the CA and the credentials (from the
# environment).
#
# Usage: ruby ruby_suite.rb ENDPOINT CA_FILE BUCKET WORKDIR
# Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed; the last
# line is "ruby suite OK" when every step passed.
require "aws-sdk-s3"
require "digest"
require "net/http"
require "openssl"

endpoint, ca, bucket, work = ARGV
s3 = Aws::S3::Client.new(endpoint: endpoint, region: "us-east-1", force_path_style: true,
                         ssl_ca_bundle: ca, retry_limit: 0)
res = Aws::S3::Resource.new(client: s3)
$failed = 0

def step(name)
  yield
  puts "ok   #{name}"
rescue StandardError => e
  $failed += 1
  puts "FAIL #{name}: #{e.class}: #{e.message}"
  puts e.backtrace.first(3).map { |l| "       #{l}" }
end

def check(cond, what)
  raise "check failed: #{what}" unless cond
end

# Deterministic bytes (no two 64 KiB chunks alike).
def pattern(len, seed)
  rng = Random.new(seed)
  rng.bytes(len)
end

MIB = 1024 * 1024
small = pattern(70_001, 1)
big_path = File.join(work, "big.bin")
big = pattern(21 * MIB + 3, 2)
File.binwrite(big_path, big)

step("create_bucket, put_object with metadata, get_object, head_object") do
  s3.create_bucket(bucket: bucket)
  s3.put_object(bucket: bucket, key: "small", body: small, content_type: "text/x-chmura",
                metadata: { "colour" => "blue" })
  got = s3.get_object(bucket: bucket, key: "small")
  check(got.body.read.b == small, "content")
  check(got.content_length == small.bytesize, "GET length #{got.content_length}")
  head = s3.head_object(bucket: bucket, key: "small")
  check(head.content_length == small.bytesize, "HEAD length #{head.content_length}")
  check(head.content_type == "text/x-chmura", "content type #{head.content_type}")
  check(head.metadata == { "colour" => "blue" }, "metadata #{head.metadata}")
  check(head.etag == got.etag, "ETags agree")
end

step("ranges: first, middle across chunks, suffix, open-ended; a streamed GET") do
  r = s3.get_object(bucket: bucket, key: "small", range: "bytes=0-9")
  check(r.body.read.b == small[0, 10], "first bytes")
  check(r.content_range == "bytes 0-9/#{small.bytesize}", "content range #{r.content_range}")
  r = s3.get_object(bucket: bucket, key: "small", range: "bytes=65530-65545")
  check(r.body.read.b == small[65_530, 16], "across a chunk boundary")
  r = s3.get_object(bucket: bucket, key: "small", range: "bytes=-7")
  check(r.body.read.b == small[-7, 7], "suffix")
  r = s3.get_object(bucket: bucket, key: "small", range: "bytes=70000-")
  check(r.body.read.b == small[70_000..], "open-ended")
  streamed = String.new(encoding: Encoding::BINARY)
  s3.get_object(bucket: bucket, key: "small") { |chunk| streamed << chunk }
  check(streamed.b == small, "streamed body")
end

step("a checksum the SDK computes (SHA256, CRC32) is verified; a wrong Content-MD5 is refused") do
  s3.put_object(bucket: bucket, key: "sha", body: small, checksum_algorithm: "SHA256")
  s3.put_object(bucket: bucket, key: "crc", body: small, checksum_algorithm: "CRC32")
  r = s3.get_object(bucket: bucket, key: "sha", checksum_mode: "ENABLED")
  check(r.body.read.b == small, "content")
  begin
    s3.put_object(bucket: bucket, key: "bad-md5", body: small,
                  content_md5: Digest::MD5.base64digest("other"))
    raise "a wrong Content-MD5 was accepted"
  rescue Aws::S3::Errors::BadDigest
    nil
  end
  begin
    s3.head_object(bucket: bucket, key: "bad-md5")
    raise "the refused body was stored"
  rescue Aws::S3::Errors::NotFound
    nil
  end
end

step("upload_file of 21 MiB in 5 MiB parts (threads), download_file in parts") do
  obj = res.bucket(bucket).object("big")
  check(obj.upload_file(big_path, multipart_threshold: 5 * MIB), "upload_file")
  head = s3.head_object(bucket: bucket, key: "big")
  check(head.content_length == big.bytesize, "HEAD length #{head.content_length}")
  check(head.etag.end_with?("-5\""), "a multipart ETag #{head.etag}")
  # mode "auto" asks HEAD ?partNumber=1 for the parts count, then GETs each part by number.
  part1 = s3.head_object(bucket: bucket, key: "big", part_number: 1)
  check(part1.parts_count == 5, "parts count #{part1.parts_count}")
  check(part1.content_length == 5 * MIB, "part 1 length #{part1.content_length}")
  out = File.join(work, "big.down")
  obj.download_file(out)
  check(Digest::SHA256.file(out).hexdigest == Digest::SHA256.hexdigest(big), "downloaded by parts")
  out2 = File.join(work, "big.ranged")
  obj.download_file(out2, mode: "get_range", chunk_size: 3 * MIB + 1)
  check(Digest::SHA256.file(out2).hexdigest == Digest::SHA256.hexdigest(big), "downloaded by ranges")
  r = s3.get_object(bucket: bucket, key: "big", range: "bytes=#{5 * MIB - 4}-#{5 * MIB + 4}")
  check(r.body.read.b == big[5 * MIB - 4, 9], "a range across parts")
end

step("a multipart upload by hand: parts out of order, list_parts, complete") do
  up = s3.create_multipart_upload(bucket: bucket, key: "manual", content_type: "application/x-parts")
  p2 = s3.upload_part(bucket: bucket, key: "manual", upload_id: up.upload_id, part_number: 2,
                      body: big[5 * MIB, 1000])
  p1 = s3.upload_part(bucket: bucket, key: "manual", upload_id: up.upload_id, part_number: 1,
                      body: big[0, 5 * MIB])
  parts = s3.list_parts(bucket: bucket, key: "manual", upload_id: up.upload_id).parts
  check(parts.map(&:part_number) == [1, 2], "parts #{parts.map(&:part_number)}")
  check(parts.map(&:size) == [5 * MIB, 1000], "plaintext part sizes #{parts.map(&:size)}")
  s3.complete_multipart_upload(bucket: bucket, key: "manual", upload_id: up.upload_id,
                               multipart_upload: { parts: [{ part_number: 1, etag: p1.etag },
                                                           { part_number: 2, etag: p2.etag }] })
  got = s3.get_object(bucket: bucket, key: "manual")
  check(got.body.read.b == big[0, 5 * MIB + 1000], "content")
  check(got.content_type == "application/x-parts", "content type")
  aborted = s3.create_multipart_upload(bucket: bucket, key: "aborted")
  s3.abort_multipart_upload(bucket: bucket, key: "aborted", upload_id: aborted.upload_id)
  begin
    s3.list_parts(bucket: bucket, key: "aborted", upload_id: aborted.upload_id)
    raise "an aborted upload still lists parts"
  rescue Aws::S3::Errors::NoSuchUpload
    nil
  end
end

step("listings v1 (paged) and v2 with prefix and delimiter, in plaintext sizes") do
  %w[dir/a dir/b dir/sub/c].each { |k| s3.put_object(bucket: bucket, key: k, body: k * 3) }
  v2 = s3.list_objects_v2(bucket: bucket, prefix: "dir/", delimiter: "/")
  check(v2.contents.map(&:key) == %w[dir/a dir/b], "keys #{v2.contents.map(&:key)}")
  check(v2.contents.map(&:size) == [15, 15], "sizes #{v2.contents.map(&:size)}")
  check(v2.common_prefixes.map(&:prefix) == ["dir/sub/"], "prefixes")
  keys = []
  marker = nil
  loop do
    page = s3.list_objects(bucket: bucket, max_keys: 2, marker: marker)
    keys.concat(page.contents.map(&:key))
    break unless page.is_truncated
    marker = page.next_marker || page.contents.last.key
  end
  check(keys.include?("big") && keys.include?("dir/sub/c") && keys.size == keys.uniq.size,
        "paged keys #{keys}")
  sizes = res.bucket(bucket).objects.to_h { |o| [o.key, o.size] }
  check(sizes["big"] == big.bytesize && sizes["small"] == small.bytesize, "sizes #{sizes}")
end

step("copy_object (COPY and REPLACE), copy_to another bucket") do
  s3.copy_object(bucket: bucket, key: "small-copy", copy_source: "#{bucket}/small")
  head = s3.head_object(bucket: bucket, key: "small-copy")
  check(head.metadata == { "colour" => "blue" }, "copied metadata #{head.metadata}")
  s3.copy_object(bucket: bucket, key: "small-copy", copy_source: "#{bucket}/small",
                 metadata_directive: "REPLACE", metadata: { "colour" => "red" })
  head = s3.head_object(bucket: bucket, key: "small-copy")
  check(head.metadata == { "colour" => "red" }, "replaced metadata #{head.metadata}")
  check(s3.get_object(bucket: bucket, key: "small-copy").body.read.b == small, "copy content")
  s3.create_bucket(bucket: "#{bucket}-2")
  res.bucket(bucket).object("big").copy_to(bucket: "#{bucket}-2", key: "big")
  r = s3.get_object(bucket: "#{bucket}-2", key: "big", range: "bytes=#{big.bytesize - 5}-")
  check(r.body.read.b == big[-5, 5], "copied to another bucket")
end

step("presigned GET and PUT URLs") do
  signer = Aws::S3::Presigner.new(client: s3)
  http = lambda do |uri, req|
    Net::HTTP.start(uri.host, uri.port, use_ssl: true, ca_file: ca,
                                        verify_mode: OpenSSL::SSL::VERIFY_PEER) { |h| h.request(req) }
  end
  put_uri = URI(signer.presigned_url(:put_object, bucket: bucket, key: "presigned", expires_in: 300))
  put = Net::HTTP::Put.new(put_uri)
  put.body = "sent with a presigned URL"
  check(http.call(put_uri, put).code == "200", "presigned PUT")
  get_uri = URI(signer.presigned_url(:get_object, bucket: bucket, key: "presigned", expires_in: 300))
  got = http.call(get_uri, Net::HTTP::Get.new(get_uri))
  check(got.code == "200" && got.body == "sent with a presigned URL", "presigned GET #{got.code}")
  tampered = URI(get_uri.to_s.sub("presigned?", "small?"))
  check(http.call(tampered, Net::HTTP::Get.new(tampered)).code == "403", "tampered URL refused")
end

step("presigned_post: a browser form upload within its content-length-range; one over it refused") do
  post = res.bucket(bucket).object("posted").presigned_post(expires: Time.now + 300,
                                                           content_length_range: 1..1000)
  form = lambda do |fields, data|
    boundary = "chmura-ruby-#{rand(1 << 32)}"
    body = +""
    fields.each do |k, v|
      body << "--#{boundary}\r\nContent-Disposition: form-data; name=\"#{k}\"\r\n\r\n#{v}\r\n"
    end
    body << "--#{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n"
    body << "Content-Type: application/octet-stream\r\n\r\n#{data}\r\n--#{boundary}--\r\n"
    uri = URI(post.url)
    req = Net::HTTP::Post.new(uri)
    req["Content-Type"] = "multipart/form-data; boundary=#{boundary}"
    req.body = body
    Net::HTTP.start(uri.host, uri.port, use_ssl: true, ca_file: ca,
                                        verify_mode: OpenSSL::SSL::VERIFY_PEER) { |h| h.request(req) }
  end
  r = form.call(post.fields, "posted through a form")
  check(r.code == "204", "form POST #{r.code} #{r.body}")
  check(s3.get_object(bucket: bucket, key: "posted").body.read == "posted through a form", "posted content")
  over = form.call(post.fields, "x" * 1001)
  check(over.code == "400" && over.body.include?("EntityTooLarge"), "over the range: #{over.code}")
  other = form.call(post.fields.merge("key" => "elsewhere"), "a key the policy does not allow")
  check(other.code == "403", "a key outside the policy: #{other.code}")
  check(s3.get_object(bucket: bucket, key: "posted").body.read == "posted through a form",
        "the refused forms changed nothing")
end

step("errors: NoSuchKey, NotFound on HEAD, NoSuchBucket") do
  begin
    s3.get_object(bucket: bucket, key: "missing")
    raise "missing key found"
  rescue Aws::S3::Errors::NoSuchKey => e
    check(!e.context.http_response.headers["x-amz-request-id"].to_s.empty?, "request id")
  end
  begin
    s3.head_object(bucket: bucket, key: "missing")
    raise "missing key found"
  rescue Aws::S3::Errors::NotFound
    nil
  end
  begin
    s3.list_objects_v2(bucket: "#{bucket}-missing")
    raise "missing bucket found"
  rescue Aws::S3::Errors::NoSuchBucket
    nil
  end
end

step("delete_objects in a batch, bucket delete") do
  keys = s3.list_objects_v2(bucket: bucket).contents.map(&:key)
  r = s3.delete_objects(bucket: bucket, delete: { objects: keys.map { |k| { key: k } } })
  check(r.deleted.size == keys.size && r.errors.empty?, "deleted #{r.deleted.size} of #{keys.size}")
  check(s3.list_objects_v2(bucket: bucket).key_count.zero?, "empty")
  # What the test harness checks in the store afterwards.
  s3.put_object(bucket: bucket, key: "kept", body: small)
end

if $failed.zero?
  puts "ruby suite OK"
else
  puts "#{$failed} step(s) failed"
  exit 1
end
