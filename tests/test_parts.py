"""The real parts the suite relies on start and answer (Docker, S3 over HTTP, PostgreSQL, Redis)."""

import os

import psycopg
import redis

from tests import parts


def test_docker_runs_the_busybox_pod_image(docker_client, pod_image):
    output = docker_client.containers.run(pod_image, ["sh", "-c", "echo hello"], remove=True, network_mode="none")
    assert output.strip() == b"hello"


def test_s3_server_speaks_http(s3_server, s3_bucket):
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a/b", Body=b"payload")
    assert client.get_object(Bucket=s3_bucket, Key="a/b")["Body"].read() == b"payload"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")


def test_postgres_answers(postgres_url):
    with psycopg.connect(postgres_url.replace("postgres://", "postgresql://")) as connection:
        assert connection.execute("select 1").fetchone() == (1,)


def test_redis_answers(redis_url):
    assert redis.Redis.from_url(redis_url).ping()


def test_seaweedfs_binds_loopback_only_and_gives_multipart_md5_etags(s3_server, s3_bucket):
    import hashlib

    client = s3_server.client()
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="big")
    parts_done, digests = [], []
    for number in (1, 2):
        body = bytes([number]) * (5 * 1024 * 1024)
        digests.append(hashlib.md5(body, usedforsecurity=False).digest())
        answer = client.upload_part(
            Bucket=s3_bucket, Key="big", PartNumber=number, UploadId=upload["UploadId"], Body=body
        )
        parts_done.append({"ETag": answer["ETag"], "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=s3_bucket, Key="big", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts_done}
    )
    # What the snapshot store's verification relies on: the ETag is the MD5 of the parts' MD5s.
    expected = f'"{hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()}-2"'
    assert client.head_object(Bucket=s3_bucket, Key="big")["ETag"] == expected
    if isinstance(s3_server, parts.SeaweedFSServer):
        listening = _listening_addresses(s3_server.process.pid)
        assert listening and all(address.startswith("127.0.0.1:") for address in listening), listening


def _listening_addresses(pid: int) -> list[str]:
    """TCP sockets the process (or its threads) listens on, as `ip:port`, from /proc."""
    from pathlib import Path

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                if table == "tcp":
                    ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = "::"
                found.append(f"{ip}:{int(port, 16)}")
    return found


def test_each_test_process_has_a_cache_and_a_redis_database_of_its_own(redis_url, tmp_path_factory):
    """Parallel workers (pytest-xdist) must not share the file cache (one's clear() wipes the
    other's figures) nor, under a scale-out stack's flushdb, a Redis database."""
    from django.conf import settings

    location = settings.CACHES["default"].get("LOCATION", "")
    assert str(tmp_path_factory.getbasetemp()) in location and "var/cache" not in location
    first = int(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15").rpartition("/")[2])
    assert redis_url.endswith(f"/{first - parts.WORKER_INDEX}")
