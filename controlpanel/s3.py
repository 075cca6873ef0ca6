"""The one S3 module: a client from settings and one mapping of S3 failures to PanelErrors.

The snapshot store and the volumes' cross-check both come here, so both honour
`AWS_ENDPOINT_URL`, `S3_CONNECT_TIMEOUT_SECONDS`, `S3_READ_TIMEOUT_SECONDS` and
`S3_MAX_ATTEMPTS`, and both say the same thing when S3 refuses or is out of reach.
"""

from django.conf import settings

from controlpanel.errors import NotFound, PanelError, Unreachable
from controlpanel.formatting import first_line


def s3_client(*, max_pool_connections: int = 10):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.AWS_ENDPOINT_URL or None,
        region_name=settings.AWS_REGION,
        config=Config(
            retries={"max_attempts": settings.S3_MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=settings.S3_CONNECT_TIMEOUT_SECONDS,
            read_timeout=settings.S3_READ_TIMEOUT_SECONDS,
            # We checksum every byte ourselves (sha256, and MD5 against the ETag): one more
            # CRC pass per part on both ends would only cost CPU.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Snapshot parts carry Content-MD5, a signed header the store checks the body
            # against. Over HTTPS botocore then leaves their bodies unsigned; over plain HTTP (a
            # local SeaweedFS or MinIO) it would hash each body once more (sha256) to sign it.
            s3={"payload_signing_enabled": False},
            max_pool_connections=max_pool_connections,
        ),
    )


class S3Refused(PanelError):
    """S3 answered, and said no (access denied, a missing key, a server error)."""


def s3_error(exc: Exception, *, where: str, what: str = "") -> PanelError:
    """One line for people about an S3 failure. `where` names the store or bucket as the
    person knows it ("snapshot store s3://b/p", "S3 bucket 'b'"); `what` the key, if any.
    A missing bucket is NotFound, a refusal S3Refused, anything on the wire Unreachable."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # A HEAD answer has no body, so its code is only the status again ("500").
        code = "" if code == str(status) else code
        if code == "NoSuchBucket":
            return NotFound(f"{where}: the bucket does not exist")
        reason = f"{code} (HTTP {status})" if code and status else code or (f"HTTP {status}" if status else "")
        detail = first_line(error.get("Message", ""))
        reason = reason or detail or first_line(exc)
        target = f" {what}" if what else ""
        return S3Refused(f"{where} refused{target}: {reason}"[:300])
    endpoint = settings.AWS_ENDPOINT_URL or "AWS"
    return Unreachable(f"{where} unreachable ({endpoint}): {first_line(exc)[:200]}")
