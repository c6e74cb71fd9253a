# A Redis group kept by consul-leader, with the docker driver: each allocation
# runs redis and a consul-leader sidecar (the image from this repo's
# Dockerfile). Clients find the writer as the passing instance of "redis"
# tagged "primary", or simply as "redis-primary" (passing only on the leader).
#
#   nomad job run -var count=3 -var redis_password=... nomad/redis.nomad.hcl

variable "count" {
  description = "Number of Redis instances (one primary, the rest replicas)."
  type        = number
  default     = 3
}

variable "image" {
  description = "The consul-leader image."
  type        = string
  default     = "consul-leader:0.1.0"
}

variable "redis_image" {
  description = "The Redis image (6.2 or newer)."
  type        = string
  default     = "redis:7.2-alpine"
}

variable "redis_password" {
  description = "requirepass/masterauth for every Redis; empty for none."
  type        = string
  default     = ""
}

variable "consul_http_addr" {
  description = "The local Consul agent, as seen from the tasks; empty: port 8500 on the client's address."
  type        = string
  default     = ""
}

job "redis" {
  type = "service"

  group "redis" {
    count = var.count

    network {
      port "db" {}
      port "leader" {}
    }

    # Tagged primary/replica by the sidecar. enable_tag_override keeps Nomad's
    # sync from removing the role tags (the sidecar puts them back anyway).
    service {
      name                = "redis"
      port                = "db"
      provider            = "consul"
      enable_tag_override = true
      check {
        name     = "consul-leader alive"
        type     = "http"
        port     = "leader"
        path     = "/liveness"
        interval = "2s"
        timeout  = "1s"
        # A sidecar whose election loop is stuck (/liveness fails past 2 x
        # SLEEP + a request timeout) is restarted; a restart re-adopts its
        # session, so it is not a failover. The grace covers its start.
        task = "consul-leader"
        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    # Passing only on the instance that holds the lock and whose Redis is primary.
    service {
      name     = "redis-primary"
      port     = "db"
      provider = "consul"
      check {
        name     = "primary"
        type     = "http"
        port     = "leader"
        path     = "/primary"
        interval = "1s"
        timeout  = "1s"
      }
    }

    task "consul-leader" {
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }
      driver = "docker"
      config {
        image = var.image
        ports = ["leader"]
      }
      env {
        CONSUL_HTTP_ADDR             = var.consul_http_addr != "" ? var.consul_http_addr : "http://${attr.unique.network.ip-address}:8500"
        CONSUL_LEADER_SERVICE_NAME   = "redis"
        CONSUL_LEADER_REPLICA_LABEL  = "replica"
        CONSUL_LEADER_REDIS_ADDR     = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_ANNOUNCE_ADDR  = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_REDIS_PASSWORD = var.redis_password
        CONSUL_LEADER_HTTP_ADDR      = "0.0.0.0:${NOMAD_PORT_leader}"
        CONSUL_LEADER_LOG_LEVEL      = "info"
      }
      # The docker driver makes memory a hard limit, and an out-of-memory kill
      # of the leader's sidecar is a failover. A sidecar with its status
      # server polled as below, ~100 writes/s and a switchover every 5 min
      # measured 63.9 MiB at its peak (RSS, 58-60 MiB steady) over 32 minutes;
      # 128 leaves it room to grow.
      resources {
        cpu    = 50
        memory = 128
      }
    }

    task "redis" {
      driver = "docker"
      config {
        image = var.redis_image
        ports = ["db"]
        # Boot as a replica of nothing: a restarted Redis takes no write before
        # its sidecar has looked at the lock (README, "Recommended Redis settings").
        args = concat(
          ["redis-server", "--port", "${NOMAD_PORT_db}", "--replicaof", "127.0.0.1", "1", "--save", "", "--appendonly", "no"],
          var.redis_password == "" ? [] : ["--requirepass", var.redis_password, "--masterauth", var.redis_password],
        )
      }
      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
