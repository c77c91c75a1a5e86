//! Real clients: boto3, aws cli, rclone, s3cmd (filled below).
