"""The real parts the suite relies on start and answer (Docker, S3 over HTTP, PostgreSQL, Redis)."""

import psycopg
import redis


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
