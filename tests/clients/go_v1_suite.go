// The AWS SDK for Go v1 (aws-sdk-go 1.44, Debian's golang-github-aws-aws-sdk-go-dev) through
// Chmura, default settings but for the endpoint, path-style addressing, the CA (SSL_CERT_FILE)
// and the credentials (from the environment). Go v1 signs every seekable payload (SigV4 with
// the body's SHA-256), sends Content-MD5 where S3 needs one, and its s3manager uploads and
// downloads in parallel parts and ranges.
//
// Usage: go_v1_suite ENDPOINT BUCKET
// Runs every step, prints "ok"/"FAIL" per step, exits non-zero if any failed; the last line is
// "go v1 suite OK" when every step passed.
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/request"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/aws/aws-sdk-go/service/s3/s3manager"
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
	if e, ok := err.(awserr.Error); ok {
		return e.Code()
	}
	return fmt.Sprintf("%v", err)
}

func main() {
	endpoint, bucket := os.Args[1], os.Args[2]
	sess := session.Must(session.NewSession(&aws.Config{
		Endpoint:         aws.String(endpoint),
		Region:           aws.String("us-east-1"),
		S3ForcePathStyle: aws.Bool(true),
		MaxRetries:       aws.Int(0),
	}))
	s3c := s3.New(sess)
	const mib = 1 << 20
	small := pattern(70001, 1)
	big := pattern(23*mib+5, 2)

	step("CreateBucket, PutObject (signed payload) with metadata, GetObject, HeadObject", func() error {
		if _, err := s3c.CreateBucket(&s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return err
		}
		_, err := s3c.PutObject(&s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("small"),
			Body: bytes.NewReader(small), ContentType: aws.String("text/x-chmura"),
			Metadata: map[string]*string{"Colour": aws.String("blue")}})
		if err != nil {
			return err
		}
		got, err := s3c.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("small")})
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(got.Body)
		got.Body.Close()
		if !bytes.Equal(body, small) || aws.Int64Value(got.ContentLength) != int64(len(small)) {
			return fmt.Errorf("content: %d bytes, length %d", len(body), aws.Int64Value(got.ContentLength))
		}
		head, err := s3c.HeadObject(&s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("small")})
		if err != nil {
			return err
		}
		if aws.StringValue(head.ContentType) != "text/x-chmura" || aws.StringValue(head.Metadata["Colour"]) != "blue" {
			return fmt.Errorf("head: %v %v", aws.StringValue(head.ContentType), head.Metadata)
		}
		if aws.StringValue(head.ETag) != aws.StringValue(got.ETag) {
			return fmt.Errorf("ETags differ")
		}
		return nil
	})

	step("ranges: first bytes, across a chunk boundary, suffix", func() error {
		for _, c := range []struct {
			r    string
			want []byte
		}{{"bytes=0-9", small[:10]}, {"bytes=65530-65545", small[65530:65546]}, {"bytes=-7", small[len(small)-7:]}} {
			got, err := s3c.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("small"), Range: aws.String(c.r)})
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(got.Body)
			got.Body.Close()
			if !bytes.Equal(body, c.want) {
				return fmt.Errorf("range %s", c.r)
			}
		}
		return nil
	})

	step("a body that does not match its signed SHA-256 is refused, nothing stored", func() error {
		req, _ := s3c.PutObjectRequest(&s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("tampered"),
			Body: bytes.NewReader([]byte("the signed body"))})
		// After signing, swap the body for another of the same length.
		req.Handlers.Send.PushFront(func(r *request.Request) {
			r.HTTPRequest.Body = io.NopCloser(strings.NewReader("another body!!!"))
		})
		err := req.Send()
		if code(err) != "XAmzContentSHA256Mismatch" {
			return fmt.Errorf("got %v", err)
		}
		_, err = s3c.HeadObject(&s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("tampered")})
		if code(err) != "NotFound" {
			return fmt.Errorf("stored anyway: %v", err)
		}
		return nil
	})

	step("s3manager Uploader: 23 MiB in 5 MiB parts, 5 at a time; Downloader: parallel ranges", func() error {
		up := s3manager.NewUploader(sess)
		if _, err := up.Upload(&s3manager.UploadInput{Bucket: aws.String(bucket), Key: aws.String("big"),
			Body: bytes.NewReader(big)}); err != nil {
			return err
		}
		head, err := s3c.HeadObject(&s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("big")})
		if err != nil {
			return err
		}
		if aws.Int64Value(head.ContentLength) != int64(len(big)) || !strings.HasSuffix(aws.StringValue(head.ETag), "-5\"") {
			return fmt.Errorf("head: %d %s", aws.Int64Value(head.ContentLength), aws.StringValue(head.ETag))
		}
		buf := aws.NewWriteAtBuffer(nil)
		down := s3manager.NewDownloader(sess)
		n, err := down.Download(buf, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("big")})
		if err != nil {
			return err
		}
		if n != int64(len(big)) || sha256.Sum256(buf.Bytes()) != sha256.Sum256(big) {
			return fmt.Errorf("downloaded %d bytes, different", n)
		}
		return nil
	})

	step("a multipart upload by hand: parts out of order, ListParts, Complete", func() error {
		cr, err := s3c.CreateMultipartUpload(&s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("manual")})
		if err != nil {
			return err
		}
		p2, err := s3c.UploadPart(&s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("manual"),
			UploadId: cr.UploadId, PartNumber: aws.Int64(2), Body: bytes.NewReader(big[5*mib : 5*mib+1000])})
		if err != nil {
			return err
		}
		p1, err := s3c.UploadPart(&s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("manual"),
			UploadId: cr.UploadId, PartNumber: aws.Int64(1), Body: bytes.NewReader(big[:5*mib])})
		if err != nil {
			return err
		}
		lp, err := s3c.ListParts(&s3.ListPartsInput{Bucket: aws.String(bucket), Key: aws.String("manual"), UploadId: cr.UploadId})
		if err != nil {
			return err
		}
		if len(lp.Parts) != 2 || aws.Int64Value(lp.Parts[0].Size) != 5*mib || aws.Int64Value(lp.Parts[1].Size) != 1000 {
			return fmt.Errorf("parts %v", lp.Parts)
		}
		_, err = s3c.CompleteMultipartUpload(&s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("manual"),
			UploadId: cr.UploadId, MultipartUpload: &s3.CompletedMultipartUpload{Parts: []*s3.CompletedPart{
				{PartNumber: aws.Int64(1), ETag: p1.ETag}, {PartNumber: aws.Int64(2), ETag: p2.ETag}}}})
		if err != nil {
			return err
		}
		got, err := s3c.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("manual"),
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", 5*mib-3, 5*mib+3))})
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(got.Body)
		got.Body.Close()
		if !bytes.Equal(body, big[5*mib-3:5*mib+4]) {
			return fmt.Errorf("a range across parts")
		}
		return nil
	})

	step("ListObjectsV2Pages (2 per page) and ListObjects with a delimiter, plaintext sizes", func() error {
		for _, k := range []string{"dir/a", "dir/b", "dir/sub/c"} {
			if _, err := s3c.PutObject(&s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(k),
				Body: strings.NewReader(strings.Repeat(k, 3))}); err != nil {
				return err
			}
		}
		sizes := map[string]int64{}
		pages := 0
		err := s3c.ListObjectsV2Pages(&s3.ListObjectsV2Input{Bucket: aws.String(bucket), MaxKeys: aws.Int64(2)},
			func(p *s3.ListObjectsV2Output, last bool) bool {
				pages++
				for _, o := range p.Contents {
					sizes[aws.StringValue(o.Key)] = aws.Int64Value(o.Size)
				}
				return true
			})
		if err != nil {
			return err
		}
		if pages < 3 || sizes["big"] != int64(len(big)) || sizes["small"] != int64(len(small)) || sizes["dir/a"] != 15 {
			return fmt.Errorf("%d pages, sizes %v", pages, sizes)
		}
		v1, err := s3c.ListObjects(&s3.ListObjectsInput{Bucket: aws.String(bucket), Prefix: aws.String("dir/"), Delimiter: aws.String("/")})
		if err != nil {
			return err
		}
		if len(v1.Contents) != 2 || len(v1.CommonPrefixes) != 1 || aws.StringValue(v1.CommonPrefixes[0].Prefix) != "dir/sub/" {
			return fmt.Errorf("v1 %v", v1)
		}
		return nil
	})

	step("CopyObject (COPY and REPLACE)", func() error {
		if _, err := s3c.CopyObject(&s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("copy"),
			CopySource: aws.String(bucket + "/small")}); err != nil {
			return err
		}
		if _, err := s3c.CopyObject(&s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("copy"),
			CopySource: aws.String(bucket + "/small"), MetadataDirective: aws.String("REPLACE"),
			Metadata: map[string]*string{"Colour": aws.String("red")}}); err != nil {
			return err
		}
		got, err := s3c.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("copy")})
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(got.Body)
		got.Body.Close()
		if !bytes.Equal(body, small) || aws.StringValue(got.Metadata["Colour"]) != "red" {
			return fmt.Errorf("copy: %d bytes, %v", len(body), got.Metadata)
		}
		return nil
	})

	step("presigned GET and PUT", func() error {
		put, _ := s3c.PutObjectRequest(&s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("presigned")})
		putURL, err := put.Presign(5 * time.Minute)
		if err != nil {
			return err
		}
		req, _ := http.NewRequest("PUT", putURL, strings.NewReader("sent with a presigned URL"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("presigned PUT %d", resp.StatusCode)
		}
		get, _ := s3c.GetObjectRequest(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("presigned")})
		getURL, err := get.Presign(5 * time.Minute)
		if err != nil {
			return err
		}
		resp, err = http.Get(getURL)
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
		_, err := s3c.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
		if code(err) != "NoSuchKey" {
			return fmt.Errorf("GET: %v", err)
		}
		_, err = s3c.HeadObject(&s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
		if code(err) != "NotFound" {
			return fmt.Errorf("HEAD: %v", err)
		}
		_, err = s3c.ListObjectsV2(&s3.ListObjectsV2Input{Bucket: aws.String(bucket + "-missing")})
		if code(err) != "NoSuchBucket" {
			return fmt.Errorf("list: %v", err)
		}
		return nil
	})

	step("DeleteObjects (Content-MD5 sent by the SDK)", func() error {
		var ids []*s3.ObjectIdentifier
		for _, k := range []string{"dir/a", "dir/b", "dir/sub/c", "copy", "presigned", "manual"} {
			ids = append(ids, &s3.ObjectIdentifier{Key: aws.String(k)})
		}
		out, err := s3c.DeleteObjects(&s3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &s3.Delete{Objects: ids}})
		if err != nil {
			return err
		}
		if len(out.Deleted) != len(ids) || len(out.Errors) != 0 {
			return fmt.Errorf("deleted %d, errors %v", len(out.Deleted), out.Errors)
		}
		return nil
	})

	if failed == 0 {
		fmt.Println("go v1 suite OK")
		return
	}
	fmt.Printf("%d step(s) failed\n", failed)
	os.Exit(1)
}
