#!/bin/sh
# Called by Fulcrum on every role change of this node, one call at a time, in
# order: on-role-change.sh ROLE TERM NODE_ID  (ROLE: primary | secondary | witness)
logger -t fulcrum-ha "node $3 is now $1 (term $2)" 2>/dev/null || echo "node $3 is now $1 (term $2)"
