#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing.
set -euo pipefail
need=()
# (filled in as the tests that need them land: postgresql + postgis for the STAC API, chromium)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
