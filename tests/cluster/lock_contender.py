"""One commit-lock contender in a process of its own, for tests/cluster/test_object_lock.py.

    python -m tests.cluster.lock_contender OUTPUT NAME LOG [--hold S] [--go FILE] [--stale-after S] \
        [--timeout S] [--poll S] -- BEAM_ARGS

Sets Beam's filesystem options from BEAM_ARGS (the store's endpoint and keys; for GCS the emulator comes
from STORAGE_EMULATOR_HOST), prints `ready`, waits until the `--go` file exists, takes the commit lock of
OUTPUT, appends `enter NAME TIME` to LOG, prints `held`, keeps the lock `--hold` seconds, appends `exit NAME`
and releases it. """

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def note(log: str, line: str) -> None:
    # One small O_APPEND write per line: lines of several processes never interleave.
    with open(log, "a", encoding="utf-8") as stream:
        stream.write(f"{line} {time.time():.3f}\n")


def lock_owner(output: str, options: object) -> str | None:
    """The owner the lock object of `output` names (None: there is none)."""
    bucket, _, prefix = output.partition("://")[2].partition("/")
    key = f"{prefix}/_state/commit.lock"
    if output.startswith("s3://"):
        import boto3
        from apache_beam.options.pipeline_options import S3Options

        s3 = options.view_as(S3Options)  # type: ignore[attr-defined]
        client = boto3.client(
            "s3", endpoint_url=s3.s3_endpoint_url, aws_access_key_id=s3.s3_access_key_id,
            aws_secret_access_key=s3.s3_secret_access_key, region_name=s3.s3_region_name,
        )  # fmt: skip
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    else:
        from google.cloud.storage import Client

        blob = Client.create_anonymous_client().bucket(bucket).get_blob(key)  # the emulator's
        if blob is None:
            return None
        body = blob.download_as_bytes()
    return str(json.loads(body).get("owner"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("name")
    parser.add_argument("log")
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--go")
    parser.add_argument("--stale-after", type=float, default=900.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=0.1)
    args, beam_args = parser.parse_known_args()

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.io.lock import CommitLock

    options = PipelineOptions([a for a in beam_args if a != "--"])
    FileSystems.set_options(options)
    lock_owner(args.output, options)  # the store's client library imported and warm
    print("ready", flush=True)
    while args.go and not os.path.exists(args.go):
        time.sleep(0.01)
    try:
        with CommitLock(
            args.output, args.name, timeout=args.timeout, stale_after=args.stale_after, poll=args.poll
        ):
            note(args.log, f"enter {args.name}")
            print("held", flush=True)
            time.sleep(args.hold)
            owner = lock_owner(args.output, options)
            if owner != args.name:
                note(args.log, f"overwritten {args.name} by {owner}")
            note(args.log, f"exit {args.name}")
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
