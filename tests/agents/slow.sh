#!/bin/sh
# Test agent that hangs: starts a child that would outlive it, records the child's pid.
sleep 30 &
echo $! >> "${SLOW_PID_FILE:-/dev/null}"
sleep 30
