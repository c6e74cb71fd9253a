# Consul ACL policy for consul-leader: what its token needs with
# default_policy = "deny", and nothing more.
#
# Written for CONSUL_LEADER_SERVICE_NAME=redis and the key that name implies
# (CONSUL_LEADER_KEY unset: consul-leader/redis/lock). For another group,
# replace "redis" with its service name and the five key paths with its key.
# One policy serves every sidecar of the group, in both modes, and the same
# token also works for `consul-leader switchover` and `consul-leader status`.
#
#   consul acl policy create -name consul-leader-redis -rules @acl-policy.hcl
#   consul acl token create -policy-name consul-leader-redis
#
# test/integration/security.test.ts runs a group with exactly these rules and
# then without each one in turn.
#
# Not needed: node:write. A new leader takes a stale primary tag off another
# instance with PUT /v1/catalog/register and SkipNodeUpdate on a node that is
# already in the catalog, which Consul authorizes with service:write alone.
# Nor agent:*, operator:* or acl:*.

# The lock. Read (and watched with blocking queries), acquired and released
# with the sidecar's session, and its value (holder, address, epoch) rewritten
# by the holder.
key "consul-leader/redis/lock" {
  policy = "write"
}

# Group membership: each sidecar holds <key>/members/<instance> with its
# session (replication offset, eligibility) and deletes it on exit; candidates
# and the leader list the prefix to rank each other and choose a successor.
key_prefix "consul-leader/redis/lock/members/" {
  policy = "write"
}

# `consul-leader switchover` leaves its request here; every sidecar watches it
# and the leader deletes it once handled. Only switchover needs it: without
# it elections and failovers work, but the watch gets a 403 every second.
key "consul-leader/redis/lock/switchover" {
  policy = "write"
}

# `consul-leader pause` leaves its flag here (and resume deletes it); every
# sidecar watches it and checks it in the same transaction when it takes the
# lock. Sidecars only read it. Without it elections work as they did before
# pauses existed (each sidecar warns once that a pause would not reach it),
# and `consul-leader pause` fails naming key:write.
key "consul-leader/redis/lock/pause" {
  policy = "write"
}

# A new leader appends the failover (when, from, to, why) to this bounded
# history, which `consul-leader status` shows. Without it elections work and
# each new leader warns once that it cannot record the failover.
key "consul-leader/redis/lock/history" {
  policy = "write"
}

# The session: created, renewed and destroyed on the node of the local agent
# (CONSUL_HTTP_ADDR), bound to the sidecar's own TTL check. A token per host
# can narrow this to session "<that agent's node name>".
session_prefix "" {
  policy = "write"
}

# The service whose tags say primary/replica. Standalone: the sidecar
# registers it with its checks, updates the checks and deregisters it on exit.
# Nomad: the sidecar finds Nomad's service among the agent's services and
# re-registers it with the role tags and Meta.session. Write includes the
# service:read that the agent and catalog reads (and `consul maint -service`)
# need.
service "redis" {
  policy = "write"
}

# Nomad mode only: the companion service carrying the sidecar's liveness check
# (ID consul-leader-<alloc>), since Nomad deletes foreign checks on its own
# services. Standalone mode never uses it.
service "redis-consul-leader" {
  policy = "write"
}

# Consul hides what is on a node the token cannot read, answering 200 rather
# than 403, so without this rule two things fail without a word in the log:
# - GET /v1/catalog/service/redis?tag=primary comes back empty, so a new
#   leader never sees, and never removes, the primary tag a crashed leader
#   left behind (discovery then names two primaries);
# - GET /v1/health/node/<node> (and /v1/agent/checks, asked while the
#   catalog cannot be read) no longer shows _node_maintenance, so
#   `consul maint -enable` on the node is ignored.
node_prefix "" {
  policy = "read"
}

# Only with CONSUL_LEADER_PREPARED_QUERY=redis-writer: the leader creates or
# updates that prepared query (GET, POST, PUT /v1/query). Uncomment, with the
# query's name:
# query "redis-writer" { policy = "write" }
