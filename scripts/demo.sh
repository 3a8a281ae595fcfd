#!/usr/bin/env bash
# The main job: the example app and a walkthrough over real HTTP
# (embedded store; set REDIS_URL=redis://host:port/db to use Redis).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" examples
exec .venv/bin/python examples/walkthrough.py
