#!/bin/sh
# Test reviewer: approves unless REVIEW_VERDICT says otherwise.
set -eu
printf '{"verdict": "%s", "summary": "%s"}' "${REVIEW_VERDICT:-approve}" "looks good" > "$ORCH_RESULT_FILE"
