#!/usr/bin/env bash
# Usage: scripts/fuzz-http1.sh [SECONDS]
# Fuzzes the HTTP/1.1 core's parsers (crates/http1/fuzz: request heads,
# response heads, chunked bodies) for SECONDS each (default 60): see
# scripts/fuzz.sh.
exec "$(dirname "$0")/fuzz.sh" http1 "$@"
