#!/bin/sh
# Test analyst that asks a question first, then works with the answer it was given.
set -eu
if [ -z "${ORCH_FEEDBACK:-}" ]; then
    printf '{"verdict": "needs_input", "summary": "Which OAuth providers should login support?"}' > "$ORCH_RESULT_FILE"
    exit 0
fi
printf 'analysis of %s with the answer: %s\n' "$ORCH_WORK_ITEM" "$ORCH_FEEDBACK" > ANALYSIS.md
