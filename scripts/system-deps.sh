#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing:
#   postgresql + postgis  the real STAC API (stac-fastapi-pgstac) the search tests talk to
#   chromium              the headless browser the viewer test opens the map in
#   chromium-driver       its WebDriver, through which the app test draws, runs and clicks
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${need[*]} and not root; the tests that need them will be skipped" >&2
    exit 0
  fi
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    echo "system-deps: could not install ${need[*]}; the tests that need them will be skipped" >&2
  fi
fi
