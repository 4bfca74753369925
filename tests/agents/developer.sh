#!/bin/sh
# Test developer: commits a change on the task branch (orch pushes it: push = true).
set -eu
echo "change for $ORCH_WORK_ITEM" >> CHANGES.txt
git add CHANGES.txt
git -c user.name=dev-agent -c user.email=dev@example.com commit -q -m "$ORCH_WORK_ITEM: implement"
echo "committed on $ORCH_BRANCH"
