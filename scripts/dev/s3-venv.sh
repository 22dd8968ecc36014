#!/usr/bin/env bash
# Makes .deps/venv-s3: moto in server mode (`moto_server`) and boto3, the real S3-compatible
# server the `s3` source's tests start on loopback (tests/it/s3.rs; see scripts/dev/venv.sh).
exec bash "$(dirname "$0")/venv.sh" s3 "moto[server]>=5,<6" boto3
