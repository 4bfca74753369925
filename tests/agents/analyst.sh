#!/bin/sh
# Test analyst: records that it ran (and with which feedback) in the worktree.
set -eu
echo "analysis of $ORCH_WORK_ITEM (feedback: ${ORCH_FEEDBACK:-none})" > ANALYSIS.md
echo "analyst ran for $ORCH_WORK_ITEM in $ORCH_STAGE"
