"""Snapshot stores beside `apps.pods.snapshots` (which keeps S3 and `store_from_url`):
`base` the interface every store keeps, `files` the `file://` store, `dedup` the
`dedup+file://` and `dedup+s3://` stores (Debian's `restic`)."""
