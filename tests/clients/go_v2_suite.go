// The AWS SDK for Go v2 (service/s3 1.29, Debian's golang-github-aws-aws-sdk-go-v2-dev) through
// Chmura, default client options but for the endpoint, path-style addressing, the region and
// the credentials (from the environment); the CA reaches Go's default HTTP client through
// SSL_CERT_FILE.
//
// Usage: go_v2_suite ENDPOINT BUCKET
// Runs every step, prints "ok"/"FAIL" per step, exits non-zero if any failed; the last line is
// "go v2 suite OK" when every step passed.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

var failed int

func step(name string, f func() error) {
	if err := f(); err != nil {
		failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
		return
	}
	fmt.Printf("ok   %s\n", name)
}

func pattern(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return fmt.Sprintf("%v", err)
}

func read(out *s3.GetObjectOutput, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func main() {
	endpoint, bucket := os.Args[1], os.Args[2]
	ctx := context.Background()
	client := s3.New(s3.Options{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		EndpointResolver: s3.EndpointResolverFromURL(endpoint),
		UsePathStyle:     true,
		RetryMaxAttempts: 1,
	})
	const mib = 1 << 20
	small := pattern(70001, 1)
	big := pattern(17*mib+5, 2)
	b := aws.String(bucket)

	step("CreateBucket, PutObject with metadata, GetObject, HeadObject", func() error {
		if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: b}); err != nil {
			return err
		}
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String("small"),
			Body: bytes.NewReader(small), ContentType: aws.String("text/x-chmura"),
			Metadata: map[string]string{"colour": "blue"}}); err != nil {
			return err
		}
		body, err := read(client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("small")}))
		if err != nil || !bytes.Equal(body, small) {
			return fmt.Errorf("content: %v", err)
		}
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String("small")})
		if err != nil {
			return err
		}
		if head.ContentLength != int64(len(small)) || aws.ToString(head.ContentType) != "text/x-chmura" || head.Metadata["colour"] != "blue" {
			return fmt.Errorf("head: %d %s %v", head.ContentLength, aws.ToString(head.ContentType), head.Metadata)
		}
		return nil
	})

	step("checksums the SDK computes (CRC32, SHA256) verified; GET with ChecksumMode", func() error {
		for _, alg := range []types.ChecksumAlgorithm{types.ChecksumAlgorithmCrc32, types.ChecksumAlgorithmSha256} {
			key := "sum-" + string(alg)
			if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String(key),
				Body: bytes.NewReader(small), ChecksumAlgorithm: alg}); err != nil {
				return fmt.Errorf("%s: %w", alg, err)
			}
			body, err := read(client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String(key),
				ChecksumMode: types.ChecksumModeEnabled}))
			if err != nil || !bytes.Equal(body, small) {
				return fmt.Errorf("%s read back: %v", alg, err)
			}
		}
		return nil
	})

	step("ranges: first bytes, across a chunk boundary, suffix", func() error {
		for _, c := range []struct {
			r    string
			want []byte
		}{{"bytes=0-9", small[:10]}, {"bytes=65530-65545", small[65530:65546]}, {"bytes=-7", small[len(small)-7:]}} {
			body, err := read(client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("small"), Range: aws.String(c.r)}))
			if err != nil || !bytes.Equal(body, c.want) {
				return fmt.Errorf("range %s: %v", c.r, err)
			}
		}
		return nil
	})

	step("manager.Uploader: 17 MiB in 5 MiB parts, 5 at a time; manager.Downloader: parallel ranges", func() error {
		up := manager.NewUploader(client)
		if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String("big"), Body: bytes.NewReader(big)}); err != nil {
			return err
		}
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String("big")})
		if err != nil {
			return err
		}
		if head.ContentLength != int64(len(big)) || !strings.HasSuffix(aws.ToString(head.ETag), "-4\"") {
			return fmt.Errorf("head: %d %s", head.ContentLength, aws.ToString(head.ETag))
		}
		buf := manager.NewWriteAtBuffer(nil)
		n, err := manager.NewDownloader(client).Download(ctx, buf, &s3.GetObjectInput{Bucket: b, Key: aws.String("big")})
		if err != nil {
			return err
		}
		if n != int64(len(big)) || sha256.Sum256(buf.Bytes()) != sha256.Sum256(big) {
			return fmt.Errorf("downloaded %d bytes, different", n)
		}
		return nil
	})

	step("a multipart upload by hand: parts out of order, ListParts, Complete, GET partNumber", func() error {
		cr, err := client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String("manual")})
		if err != nil {
			return err
		}
		p2, err := client.UploadPart(ctx, &s3.UploadPartInput{Bucket: b, Key: aws.String("manual"), UploadId: cr.UploadId,
			PartNumber: 2, Body: bytes.NewReader(big[5*mib : 5*mib+1000])})
		if err != nil {
			return err
		}
		p1, err := client.UploadPart(ctx, &s3.UploadPartInput{Bucket: b, Key: aws.String("manual"), UploadId: cr.UploadId,
			PartNumber: 1, Body: bytes.NewReader(big[:5*mib])})
		if err != nil {
			return err
		}
		lp, err := client.ListParts(ctx, &s3.ListPartsInput{Bucket: b, Key: aws.String("manual"), UploadId: cr.UploadId})
		if err != nil {
			return err
		}
		if len(lp.Parts) != 2 || lp.Parts[0].Size != 5*mib || lp.Parts[1].Size != 1000 {
			return fmt.Errorf("parts %+v", lp.Parts)
		}
		if _, err := client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: b, Key: aws.String("manual"),
			UploadId: cr.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
				{PartNumber: 1, ETag: p1.ETag}, {PartNumber: 2, ETag: p2.ETag}}}}); err != nil {
			return err
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("manual"), PartNumber: 2})
		if err != nil {
			return err
		}
		body, err := read(out, err)
		if err != nil || !bytes.Equal(body, big[5*mib:5*mib+1000]) || out.PartsCount != 2 {
			return fmt.Errorf("part 2: %v, parts count %d", err, out.PartsCount)
		}
		return nil
	})

	step("ListObjectsV2Paginator (2 per page) in plaintext sizes; a delimiter", func() error {
		for _, k := range []string{"dir/a", "dir/b", "dir/sub/c"} {
			if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String(k),
				Body: strings.NewReader(strings.Repeat(k, 3))}); err != nil {
				return err
			}
		}
		sizes := map[string]int64{}
		pages := 0
		p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: b, MaxKeys: 2})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return err
			}
			pages++
			for _, o := range page.Contents {
				sizes[aws.ToString(o.Key)] = o.Size
			}
		}
		if pages < 3 || sizes["big"] != int64(len(big)) || sizes["small"] != int64(len(small)) || sizes["dir/a"] != 15 {
			return fmt.Errorf("%d pages, sizes %v", pages, sizes)
		}
		d, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: b, Prefix: aws.String("dir/"), Delimiter: aws.String("/")})
		if err != nil {
			return err
		}
		if len(d.Contents) != 2 || len(d.CommonPrefixes) != 1 || aws.ToString(d.CommonPrefixes[0].Prefix) != "dir/sub/" {
			return fmt.Errorf("delimited %+v", d)
		}
		return nil
	})

	step("CopyObject (REPLACE metadata); conditional GETs", func() error {
		if _, err := client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: b, Key: aws.String("copy"),
			CopySource: aws.String(bucket + "/small"), MetadataDirective: types.MetadataDirectiveReplace,
			Metadata: map[string]string{"colour": "red"}}); err != nil {
			return err
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("copy")})
		body, err := read(out, err)
		if err != nil || !bytes.Equal(body, small) || out.Metadata["colour"] != "red" {
			return fmt.Errorf("copy: %v %v", err, out.Metadata)
		}
		_, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("copy"), IfMatch: aws.String("\"nope\"")})
		if code(err) != "PreconditionFailed" {
			return fmt.Errorf("If-Match: %v", err)
		}
		body, err = read(client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("copy"), IfMatch: out.ETag}))
		if err != nil || !bytes.Equal(body, small) {
			return fmt.Errorf("If-Match with the ETag: %v", err)
		}
		return nil
	})

	step("presigned GET and PUT", func() error {
		pc := s3.NewPresignClient(client, s3.WithPresignExpires(5*time.Minute))
		put, err := pc.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String("presigned")})
		if err != nil {
			return err
		}
		req, _ := http.NewRequest(put.Method, put.URL, strings.NewReader("sent with a presigned URL"))
		for k, v := range put.SignedHeader {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("presigned PUT %d", resp.StatusCode)
		}
		get, err := pc.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("presigned")})
		if err != nil {
			return err
		}
		resp, err = http.Get(get.URL)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "sent with a presigned URL" {
			return fmt.Errorf("presigned GET %d", resp.StatusCode)
		}
		return nil
	})

	step("errors: NoSuchKey, NotFound on HEAD, NoSuchBucket", func() error {
		_, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: aws.String("missing")})
		var nsk *types.NoSuchKey
		if !errors.As(err, &nsk) {
			return fmt.Errorf("GET: %v", err)
		}
		_, err = client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: aws.String("missing")})
		if code(err) != "NotFound" {
			return fmt.Errorf("HEAD: %v", err)
		}
		_, err = client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket + "-missing")})
		if code(err) != "NoSuchBucket" {
			return fmt.Errorf("list: %v", err)
		}
		return nil
	})

	step("DeleteObjects", func() error {
		var ids []types.ObjectIdentifier
		for _, k := range []string{"dir/a", "dir/b", "dir/sub/c", "copy", "presigned", "manual"} {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		out, err := client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: b, Delete: &types.Delete{Objects: ids}})
		if err != nil {
			return err
		}
		if len(out.Deleted) != len(ids) || len(out.Errors) != 0 {
			return fmt.Errorf("deleted %d, errors %v", len(out.Deleted), out.Errors)
		}
		return nil
	})

	if failed == 0 {
		fmt.Println("go v2 suite OK")
		return
	}
	fmt.Printf("%d step(s) failed\n", failed)
	os.Exit(1)
}
