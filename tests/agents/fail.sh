#!/bin/sh
echo "this agent always fails" >&2
exit 3
